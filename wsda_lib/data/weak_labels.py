"""Image-level ("weak") labels derived from label maps.

A class is *present* in an image when it covers more than a fraction (10% in the paper's
code) of that class's typical area; tiny specks do not count. Typical areas are estimated on
a training set and stored with it.
"""

from __future__ import annotations

import numpy as np

from .classes import IGNORE_INDEX


def class_pixel_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, H, W) label maps -> (N, C) pixel counts per class (ignore pixels skipped)."""
    labels = np.asarray(labels).reshape(len(labels), -1).astype(np.int64)
    valid = labels != IGNORE_INDEX
    if (labels[valid] >= num_classes).any() or (labels[valid] < 0).any():
        bad = np.unique(labels[valid & ((labels >= num_classes) | (labels < 0))])
        raise ValueError(f"label ids {bad.tolist()} outside 0..{num_classes - 1} "
                         f"(and not {IGNORE_INDEX})")
    rows = np.repeat(np.arange(len(labels)), labels.shape[1])[valid.ravel()]
    counts = np.zeros((len(labels), num_classes), np.int64)
    np.add.at(counts, (rows, labels[valid]), 1)
    return counts


def typical_areas(counts: np.ndarray) -> np.ndarray:
    """(C,) median pixel count of each class over the images that contain it (0 if none)."""
    counts = np.asarray(counts)
    return np.array([np.median(c[c > 0]) if (c > 0).any() else 0.0 for c in counts.T])


def image_labels(counts: np.ndarray, typical: np.ndarray | None = None,
                 fraction: float = 0.1) -> np.ndarray:
    """(N, C) 0/1 weak labels: count > fraction * typical area (the paper's rule), or, with
    `typical=None`, any pixel at all (the "any pixel" rule)."""
    counts = np.asarray(counts)
    if typical is None:
        return (counts > 0).astype(np.float32)
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    return ((counts > 0) & (counts > fraction * np.asarray(typical))).astype(np.float32)
