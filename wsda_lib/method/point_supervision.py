"""WDA with one point per present class (docs/method.md §4): a person clicks one pixel of each class
the image contains; a cross-entropy on those pixels adds to the objective with weight 1."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def sample_points(labels: np.ndarray, weak_labels: np.ndarray, seed: int) -> np.ndarray:
    """One random pixel per present class: (N, H, W) labels and (N, C) weak labels ->
    (N, C) int64 flat pixel indices (y * W + x), -1 where the class is not present.

    Drawn once per dataset and seed, like a fixed human annotation.
    """
    rng = np.random.default_rng(seed)
    n, c = weak_labels.shape
    points = np.full((n, c), -1, np.int64)
    flat = labels.reshape(n, -1)
    for i, k in zip(*np.nonzero(weak_labels), strict=True):
        pixels = np.flatnonzero(flat[i] == k)
        if len(pixels):
            points[i, k] = rng.choice(pixels)
    return points


def point_loss(logits: torch.Tensor, points: torch.Tensor, size) -> torch.Tensor:
    """L_point = mean over clicked points of −log softmax(upsampled logits)[point's class].

    logits (B, C, h, w) are upsampled to `size` = (H, W); points (B, C) flat indices into
    H·W, −1 for "no point". Returns 0 when the batch has no point.
    """
    up = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    log_probs = F.log_softmax(up, dim=1).flatten(2)                    # (B, C, H*W)
    valid = points >= 0
    picked = torch.gather(log_probs, 2, points.clamp(min=0).unsqueeze(2)).squeeze(2)  # (B, C)
    return -(picked * valid).sum() / valid.sum().clamp(min=1)
