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


@dataclass
class StepOutputs:
    """What one adaptation step's forward passes give the objective (docs/method.md §7).

    Source batch: logits_s (B, C, h, w), feats_s (B, D, h, w) of images of size_s (H, W),
    labels_s (B, H, W), weak_s (B, C) its ground-truth image labels (read by L_D^C and by
    lambda_c_source). Target batch: logits_t (B, C, h', w'), feats_t (B, D, h', w') of images
    of size_t (H', W'); weak_t (B, C) its weak labels (L_c, L_adv^C; None without),
    points_t (B, C) flat pixel indices into H'·W' (-1 = none), pseudo_t (B, H', W') pixel
    pseudo labels. `generator_loss` fills probs_t (the target's softmax at its size) and
    category_t (its category features, (B, C, D)), detached, which `discriminator_loss`
    reuses instead of computing them again."""
    logits_s: torch.Tensor
    feats_s: torch.Tensor
    labels_s: torch.Tensor
    size_s: tuple
    logits_t: torch.Tensor
    feats_t: torch.Tensor
    size_t: tuple
    weak_s: torch.Tensor | None = None
    weak_t: torch.Tensor | None = None
    points_t: torch.Tensor | None = None
    pseudo_t: torch.Tensor | None = None
    probs_t: torch.Tensor | None = None
    category_t: torch.Tensor | None = None


def generator_loss(w: LossWeights, discs: Discriminators | None, out: StepOutputs,
                   dropout: float = 0.1, pool: Pooling | None = None
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_G for one step (docs/method.md §7); returns (loss, {term name: its unweighted value,
    a detached 0-d tensor}). The terms stay on the device: the training loop copies them to
    the host once per log interval, not once per term and step.

    The output discriminator sees the target's softmax at the target's own size, as in
    AdaptSegNet. Dropout (p=`dropout`) hits the target logits before the pooling of L_c
    only, as in the released code; `pool` is L_c's pooling (weak_classification.Pooling;
    None: the paper's)."""
    pool = pool or Pooling()
    loss = segmentation_loss(out.logits_s, out.labels_s)
    terms = {"seg": loss}
    if w.lambda_c:
        terms["weak"] = weak_label_loss(F.dropout(out.logits_t, dropout, training=True),
                                        out.weak_t, pool)
        loss = loss + w.lambda_c * terms["weak"]
    if w.lambda_c_source:
        terms["weak_source"] = weak_label_loss(F.dropout(out.logits_s, dropout, training=True),
                                               out.weak_s, pool)
        loss = loss + w.lambda_c_source * terms["weak_source"]
    if w.lambda_adv:
        probs_t = output_probabilities(out.logits_t, out.size_t)
        out.probs_t = probs_t.detach()
        terms["adv"] = output_adversarial_loss(discs.output(probs_t))
        loss = loss + w.lambda_adv * terms["adv"]
    if w.lambda_cw:
        category_t = category_features(out.logits_t, out.feats_t)           # (B, C, D)
        out.category_t = category_t.detach()
        terms["adv_cw"] = category_adversarial_loss(discs.category(category_t), out.weak_t)
        loss = loss + w.lambda_cw * terms["adv_cw"]
    if w.lambda_point:
        terms["point"] = point_loss(out.logits_t, out.points_t, out.size_t)
        loss = loss + w.lambda_point * terms["point"]
    if w.lambda_st:
        terms["self_training"] = segmentation_loss(out.logits_t, out.pseudo_t)
        loss = loss + w.lambda_st * terms["self_training"]
    return loss, {k: v.detach() for k, v in terms.items()}


def discriminator_loss(discs: Discriminators, out: StepOutputs
                       ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """L_D on detached outputs (the discriminators learn; the network does not): the
    output-space term on softmax outputs at each batch's size, and the category term on the
    present classes (weak_s from the source ground truth, weak_t the target's weak labels).
    Returns (loss, terms), or (None, {}) without discriminators; terms (detached 0-d
    tensors): "disc", and "disc_accuracy", the share of output-space positions whose domain
    the output discriminator gets right, and "disc_cw_accuracy", the share of present
    (image, class) pairs whose domain the category discriminators get right."""
    loss, terms = None, {}
    logits_s, feats_s = out.logits_s.detach(), out.feats_s.detach()
    logits_t, feats_t = out.logits_t.detach(), out.feats_t.detach()
    if discs.output is not None:
        probs_t = out.probs_t
        if probs_t is None:
            probs_t = output_probabilities(logits_t, out.size_t)
        d_s = discs.output(output_probabilities(logits_s, out.size_s))
        d_t = discs.output(probs_t)
        loss = output_discriminator_loss(d_s, d_t)
        terms["disc_accuracy"] = discriminator_accuracy(d_s, torch.ones_like(d_s), d_t,
                                                        torch.ones_like(d_t))
    if discs.category is not None:
        category_t = out.category_t
        if category_t is None:
            category_t = category_features(logits_t, feats_t)
        d_s = discs.category(category_features(logits_s, feats_s))
        d_t = discs.category(category_t)
        loss_cw = category_discriminator_loss(d_s, out.weak_s, d_t, out.weak_t)
        loss = loss_cw if loss is None else loss + loss_cw
        terms["disc_cw_accuracy"] = discriminator_accuracy(d_s, out.weak_s, d_t, out.weak_t)
    if loss is not None:
        terms["disc"] = loss.detach()
    return loss, terms
