"""Weak-label classification (docs/method.md §3-4): image-level scores from segmentation logits.

The segmentation logits A (B, C, h, w) are pooled over space into one score per class; a
multi-label BCE against the image's weak label y (B, C) then pushes the segmentation output to
fire for the classes an image contains and to stay silent for those it does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from wsda_lib.core.config import check_range


def smooth_max_pool(logits: torch.Tensor, r: float = 1.0,
                    positions: int | None = None) -> torch.Tensor:
    """Smooth-max (log-sum-exp) pooling over space, before the sigmoid:

        s_c = (1/r) · log( (1/N) · Σ_{i,j} exp(r · A_c,ij) ),   N = h·w

    logits (B, C, h, w) -> (B, C). r -> inf gives the max, r -> 0 the mean; r = 1 in the
    released code. With r = 1 this is a log-*mean*-exp: a blob of logit a covering a share
    s of the map pools to about a + log s, so the pooling carries an area prior, and one
    position is 1/(h·w) of the image. `positions` replaces N to move that prior: 8385 makes
    one position weigh what it weighs on the paper's 129x65 map (docs/method.md §3).

    >>> smooth_max_pool(torch.zeros(1, 2, 3, 3))  # constant maps pool to that constant
    tensor([[0., 0.]])
    """
    check_range("adapt.smooth_max_r", r)
    flat = logits.flatten(2)                                            # (B, C, h*w)
    return (torch.logsumexp(r * flat, dim=2) - math.log(positions or flat.shape[2])) / r


@dataclass(frozen=True)
class Pooling:
    """How a logit map becomes one image-level score per class (docs/method.md §3):
    smooth-max with parameter r over a mean of `positions` (None: the map's h·w). With
    `centred`, the logits are first centred over classes at each position,
    A_c − mean_k A_k: softmax, and so L_seg, ignores a shift of every class's logit at
    once, and pooling the raw logits lets L_c move all classes that way at no cost. Centring
    is this project's departure (docs/method.md §13); Pooling() is the paper's."""

    r: float = 1.0
    positions: int | None = None
    centred: bool = False

    @classmethod
    def from_config(cls, adapt) -> Pooling:
        """The pooling an AdaptConfig trains with (smooth_max_r, pool_positions,
        pool_centred)."""
        return cls(adapt.smooth_max_r, adapt.pool_positions, adapt.pool_centred)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> pooled scores (B, C), before the sigmoid."""
        if self.centred:
            logits = logits - logits.mean(1, keepdim=True)
        return smooth_max_pool(logits, self.r, self.positions)


def image_class_scores(logits: torch.Tensor, pool: Pooling = Pooling()) -> torch.Tensor:
    """P_c = sigmoid(pool(A)_c): the probability that class c is in the image,
    (B, C, h, w) -> (B, C)."""
    return torch.sigmoid(pool(logits))


def weak_label_loss(logits: torch.Tensor, weak_labels: torch.Tensor, pool: Pooling = Pooling()):
    """L_c = −(1/C) Σ_c [ y_c log P_c + (1 − y_c) log(1 − P_c) ], averaged over the batch.

    logits (B, C, h, w); weak_labels y (B, C) in {0, 1}. Computed from the pooled logits
    with BCE-with-logits, which equals the formula but does not overflow.

    >>> weak_label_loss(torch.zeros(1, 2, 2, 2), torch.tensor([[1.0, 0.0]]))  # P = 1/2
    tensor(0.6931)
    """
    if weak_labels.shape != logits.shape[:2]:
        raise ValueError(f"weak labels of shape {tuple(weak_labels.shape)} do not match the "
                         f"logits' (batch, classes) {tuple(logits.shape[:2])}")
    return F.binary_cross_entropy_with_logits(pool(logits), weak_labels.float())


@torch.no_grad()
def pseudo_weak_labels(logits: torch.Tensor, threshold: float = 0.2,
                       pool: Pooling = Pooling()):
    """UDA's pseudo-weak labels: y_c = 1[P_c > T], T = 0.2, from the detached prediction.

    (B, C, h, w) -> (B, C) float 0/1; in the paper, recomputed at every iteration from the
    current model.
    """
    check_range("adapt.pseudo_threshold", threshold)
    return (image_class_scores(logits.detach(), pool) > threshold).float()
