"""The paper's full objective (docs/method.md §7): the generator loss and the discriminator
loss of one adaptation step, assembled from the terms of the other method files.

    L_G = L_seg(source) + λ_adv·L_adv + λ_c·L_c + λ_cw·L_adv^C  (+ λ_point·L_point)
          (+ λ_st·L_seg(target pseudo labels), this project's self-training extension)
    L_D = ½ BCE(D(source), 0) + ½ BCE(D(target), 1)  for the output-space discriminator
          + the same, per present class, for the category discriminators D_c

A term whose weight is 0 is not computed, and its discriminator is not built.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from wsda_lib.data.classes import IGNORE_INDEX
from wsda_lib.method.category_alignment import (
    CategoryDiscriminators,
    category_adversarial_loss,
    category_discriminator_loss,
    category_features,
    discriminator_accuracy,
)
from wsda_lib.method.output_alignment import (
    OutputDiscriminator,
    output_adversarial_loss,
    output_discriminator_loss,
    output_probabilities,
)
from wsda_lib.method.point_supervision import point_loss
from wsda_lib.method.weak_classification import Pooling, weak_label_loss


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_seg: mean pixel cross-entropy of logits (B, C, h, w), upsampled bilinearly to the
    labels' (B, H, W), ignoring IGNORE_INDEX (255). docs/method.md §7. A batch with no
    labelled pixel (self-training's pseudo labels, once the weak-label filter has dropped
    every pixel of the batch) gives 0, not the NaN of a mean over nothing.

    >>> segmentation_loss(torch.zeros(1, 2, 1, 1), torch.tensor([[[0, 255]]]))  # log 2
    tensor(0.6931)
    >>> segmentation_loss(torch.zeros(1, 2, 1, 1), torch.tensor([[[255, 255]]]))
    tensor(0.)
    """
    up = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    if not bool((labels != IGNORE_INDEX).any()):
        return up.sum() * 0.0  # keeps the graph: backward gives zero gradients
    return F.cross_entropy(up, labels.long(), ignore_index=IGNORE_INDEX)


@dataclass(frozen=True)
class LossWeights:
    """The weights of the generator objective, named as in docs/method.md §7; 0 switches a
    term off. lambda_point weighs L_point (WDA points), lambda_st the self-training
    extension's target L_seg, lambda_c_source L_c on the source batch against its
    ground-truth image labels (this project's departure; adapt.source_weak_loss).
    L_seg on the source always has weight 1."""

    lambda_adv: float = 0.0
    lambda_c: float = 0.0
    lambda_cw: float = 0.0
    lambda_point: float = 0.0
    lambda_st: float = 0.0
    lambda_c_source: float = 0.0

    @classmethod
    def from_config(cls, adapt) -> LossWeights:
        """The weights an AdaptConfig switches on: λ_c is lambda_c with pseudo-weak labels
        and lambda_c_human with human ones (docs/method.md §7)."""
        human = adapt.weak_labels in ("image", "point")
        return cls(
            lambda_adv=adapt.lambda_adv if adapt.output_alignment else 0.0,
            lambda_c=(adapt.lambda_c_human if human else adapt.lambda_c)
            if adapt.weak_loss else 0.0,
            lambda_cw=adapt.lambda_cw if adapt.category_alignment else 0.0,
            lambda_point=adapt.lambda_point if adapt.weak_labels == "point" else 0.0,
            lambda_st=adapt.lambda_st if adapt.self_training else 0.0,
            lambda_c_source=adapt.lambda_c if adapt.weak_loss and adapt.source_weak_loss
            else 0.0)

    def target_terms(self) -> dict[str, float]:
        """The weights (name: value) of the terms that are on and read the target: every
        field but SOURCE_TERMS whose weight is not 0. Empty means that an adaptation step would
        learn from the source alone. A term added as a field here counts without more code.

        >>> LossWeights(lambda_adv=0.001, lambda_c_source=0.01).target_terms()
        {'lambda_adv': 0.001}
        """
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in SOURCE_TERMS and getattr(self, f.name)}


# LossWeights fields whose term reads only the source batch.
SOURCE_TERMS = ("lambda_c_source",)


class Discriminators(nn.Module):
    """The discriminators the weights need: `output` (OutputDiscriminator, when λ_adv > 0)
    and `category` (CategoryDiscriminators, when λ_cw > 0); None otherwise. Both draw their
    initial weights from the global generator, output first, so the category
    discriminators' start depends on whether the output one was built."""

    def __init__(self, weights: LossWeights, num_classes: int, feature_dim: int,
                 output_width: int = 64, category_hidden: int | None = None):
        super().__init__()
        self.output = OutputDiscriminator(num_classes, output_width) \
            if weights.lambda_adv else None
        self.category = CategoryDiscriminators(num_classes, feature_dim, category_hidden) \
            if weights.lambda_cw else None


def generator_loss(w: LossWeights, discs: Discriminators, logits_s, labels_s, logits_t,
                   feats_t, target_size, weak_t=None, points_t=None, pseudo_t=None,
                   dropout: float = 0.1, pool: Pooling | None = None,
                   weak_s=None, keep: dict | None = None) -> tuple[torch.Tensor, dict]:
    """L_G for one step; returns (loss, {term name: float}).

    logits_s (B, C, h, w) and labels_s (B, H, W) of the source batch; logits_t (B, C, h', w')
    and feats_t (B, D, h', w') of the target batch, whose images are `target_size` (H', W');
    weak_t (B, C) its weak labels (needed by L_c and L_adv^C); points_t (B, C) flat pixel
    indices into H'·W', -1 = none; pseudo_t (B, H', W') pixel pseudo labels. The output
    discriminator sees the target's softmax at the target's own size, as in AdaptSegNet.
    Dropout (p=`dropout`) hits the target logits before the pooling of L_c only, as in the
    released code; `pool` is L_c's pooling (weak_classification.Pooling; None: the
    paper's). weak_s (B, C), the source's ground-truth image labels, is read by
    lambda_c_source only. `keep`, a dict, receives what discriminator_loss can reuse
    instead of computing it again: the target's softmax at its size ("probs_t") and its
    category features ("category_t"), detached.
    """
    pool = pool or Pooling()
    loss = segmentation_loss(logits_s, labels_s)
    terms = {"seg": loss.item()}
    if w.lambda_c:
        loss_c = weak_label_loss(F.dropout(logits_t, dropout, training=True), weak_t, pool)
        loss, terms["weak"] = loss + w.lambda_c * loss_c, loss_c.item()
    if w.lambda_c_source:
        loss_cs = weak_label_loss(F.dropout(logits_s, dropout, training=True), weak_s, pool)
        loss, terms["weak_source"] = loss + w.lambda_c_source * loss_cs, loss_cs.item()
    if w.lambda_adv:
        probs_t = output_probabilities(logits_t, target_size)
        if keep is not None:
            keep["probs_t"] = probs_t.detach()
        loss_adv = output_adversarial_loss(discs.output(probs_t))
        loss, terms["adv"] = loss + w.lambda_adv * loss_adv, loss_adv.item()
    if w.lambda_cw:
        category_t = category_features(logits_t, feats_t)                   # (B, C, D)
        if keep is not None:
            keep["category_t"] = category_t.detach()
        d_t = discs.category(category_t)                                     # (B, C)
        loss_cw = category_adversarial_loss(d_t, weak_t)
        loss, terms["adv_cw"] = loss + w.lambda_cw * loss_cw, loss_cw.item()
    if w.lambda_point:
        loss_pt = point_loss(logits_t, points_t, target_size)
        loss, terms["point"] = loss + w.lambda_point * loss_pt, loss_pt.item()
    if w.lambda_st:
        loss_st = segmentation_loss(logits_t, pseudo_t)
        loss, terms["self_training"] = loss + w.lambda_st * loss_st, loss_st.item()
    return loss, terms


def discriminator_loss(discs: Discriminators, logits_s, feats_s, weak_s, logits_t, feats_t,
                       weak_t, sizes, kept: dict | None = None
                       ) -> tuple[torch.Tensor | None, dict]:
    """L_D on detached outputs (the discriminators learn; the network does not): the
    output-space term on softmax outputs at `sizes` = (source (H, W), target (H', W')), and
    the category term on the present classes, weak_s (B, C) from the source ground truth and
    weak_t (B, C) the target's weak labels. Returns (loss, terms), or (None, {}) without
    discriminators; terms["disc_cw_accuracy"] is the share of present (image, class) pairs
    whose domain the category discriminators get right, terms["disc_accuracy"] the share of
    output-space positions whose domain the output discriminator gets right. `kept`: what
    generator_loss kept of the same step's target outputs (the same values, not computed
    twice)."""
    loss, terms, kept = None, {}, kept or {}
    logits_s, feats_s = logits_s.detach(), feats_s.detach()
    logits_t, feats_t = logits_t.detach(), feats_t.detach()
    if discs.output is not None:
        probs_t = kept.get("probs_t")
        if probs_t is None:
            probs_t = output_probabilities(logits_t, sizes[1])
        d_s, d_t = discs.output(output_probabilities(logits_s, sizes[0])), discs.output(probs_t)
        loss = output_discriminator_loss(d_s, d_t)
        terms["disc_accuracy"] = discriminator_accuracy(d_s, torch.ones_like(d_s), d_t,
                                                        torch.ones_like(d_t))
    if discs.category is not None:
        category_t = kept.get("category_t")
        if category_t is None:
            category_t = category_features(logits_t, feats_t)
        d_s = discs.category(category_features(logits_s, feats_s))
        d_t = discs.category(category_t)
        loss_cw = category_discriminator_loss(d_s, weak_s, d_t, weak_t)
        loss = loss_cw if loss is None else loss + loss_cw
        terms["disc_cw_accuracy"] = discriminator_accuracy(d_s, weak_s, d_t, weak_t)
    if loss is not None:
        terms["disc"] = loss.item()
    return loss, terms
