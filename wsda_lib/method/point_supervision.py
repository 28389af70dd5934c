"""WDA with one point per present class (docs/method.md §4): a person clicks one pixel of each class
the image contains; a cross-entropy on those pixels adds to the objective with weight 1.

On the real datasets the clicks are drawn per image, by a generator seeded with (seed, the
image's name): an image gets the same points whatever split it is in, its position there and
the split's size, like a fixed human annotation, and no split's labels are ever held in memory
together. The embedded benchmark, held in memory, keeps the clicks its published numbers were
measured with: one generator over the whole split (sample_points).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F


def point_rng(seed: int, name: str) -> np.random.Generator:
    """The generator that draws the points of the image called `name` for `seed`."""
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return np.random.default_rng((seed, key))


def image_points(label: np.ndarray, weak_label: np.ndarray, seed: int, name: str) -> np.ndarray:
    """One random pixel per present class of one image: (H, W) label and (C,) weak label ->
    (C,) int64 flat pixel indices (y * W + x), -1 where the class is not present (or, which
    the image-level rule never allows, present without a pixel). Depends on the image alone."""
    rng = point_rng(seed, name)
    flat = np.asarray(label).reshape(-1)
    points = np.full(len(weak_label), -1, np.int64)
    for k in np.flatnonzero(np.asarray(weak_label)):
        pixels = np.flatnonzero(flat == k)
        if len(pixels):
            points[k] = rng.choice(pixels)
    return points


class ItemPoints:
    """A function of a split's item (its "label", "weak_label" and "name") that gives its
    points (image_points) as a tensor: data.splits.WithItems(split, points=ItemPoints(seed))
    derives them as each item is read, at the label size the split trains with."""

    def __init__(self, seed: int):
        self.seed = seed

    def __call__(self, item: dict) -> torch.Tensor:
        return torch.from_numpy(image_points(item["label"].numpy(), item["weak_label"].numpy(),
                                             self.seed, item["name"]))


def sample_points(labels: np.ndarray, weak_labels: np.ndarray, seed: int) -> np.ndarray:
    """The embedded benchmark's clicks, drawn once per split and seed from one generator:
    (N, H, W) labels and (N, C) weak labels -> (N, C) int64 flat pixel indices (y * W + x),
    -1 where the class is not present. Its whole target split is in memory; the series'
    numbers were measured with these points, so they stay. Splits read from files use the
    per-image rule (image_points, ItemPoints), which needs no split in memory."""
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


def split_points(split, seed: int, names) -> np.ndarray:
    """(N, C) the clicks image_points draws for every image of `split`, as if image i were
    called names[i] (ItemPoints draws the same for a split whose items have those names):
    what `wsda data export-embedded` writes as the points a person would have clicked."""
    return np.stack([image_points(split.label(i), split.weak_labels[i], seed, names[i])
                     for i in range(len(split))])
