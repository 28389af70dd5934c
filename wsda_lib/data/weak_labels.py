"""Image-level ("weak") labels derived from label maps.

A class is *present* in an image when it covers more than a fraction (10% in the paper's
code) of that class's typical area; tiny specks do not count. Typical areas are estimated on
a training set and stored with it.
"""

from __future__ import annotations

import numpy as np

from wsda_lib.core.config import check_range
from wsda_lib.data.classes import IGNORE_INDEX


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


def typical_areas(counts: np.ndarray, pixels) -> np.ndarray:
    """(C,) typical area of each class as a share of the image: the median, over the images
    that contain the class, of its pixel count / the image's pixels (0 if none has it).

    counts (N, C) from label maps of `pixels` pixels each (a number, or (N,) per image).
    Shares, not pixel counts, so that labels at another resolution (Cityscapes val at
    2048x1024 against source_train at 1280x720) are judged by the same bar.

    >>> typical_areas(np.array([[10, 0], [30, 0]]), 100)
    array([0.2, 0. ])
    """
    shares = np.asarray(counts) / np.reshape(pixels, (-1, 1))
    return np.array([np.median(c[c > 0]) if (c > 0).any() else 0.0 for c in shares.T])


def image_labels(counts: np.ndarray, typical: np.ndarray | None = None,
                 fraction: float = 0.1, pixels=None) -> np.ndarray:
    """(N, C) 0/1 weak labels: a class is present when its share of the image, count /
    pixels, exceeds `fraction` (data.weak_label_fraction, 0.1 in the paper's code) of its
    typical share (typical_areas); with `typical=None`, when it has any pixel at all."""
    counts = np.asarray(counts)
    if typical is None:
        return (counts > 0).astype(np.float32)
    check_range("data.weak_label_fraction", fraction)
    if pixels is None:
        raise ValueError("image_labels needs the images' pixel count to compare shares")
    shares = counts / np.reshape(pixels, (-1, 1))
    return ((counts > 0) & (shares > fraction * np.asarray(typical))).astype(np.float32)
