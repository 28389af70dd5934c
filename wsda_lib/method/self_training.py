"""Pixel-level pseudo labels filtered by weak labels: THIS PROJECT'S EXTENSION.

The paper's released code has no pixel-level self-training (its "pseudo labels" are the
image-level pseudo-weak labels). This module adds one round of it, in the spirit of class-
balanced self-training: each target pixel takes the adapted model's prediction as a label when
its confidence clears its class's threshold *and* the predicted class is in the image's weak
label; every other pixel is ignored (255). The model is then retrained on these labels.
"""

from __future__ import annotations

import numpy as np
import torch

from wsda_lib.core.config import check_range
from wsda_lib.data.classes import IGNORE_INDEX


def _check_quantile(quantile: float):
    check_range("adapt.st_quantile", quantile)


def class_thresholds(confidence: torch.Tensor, prediction: torch.Tensor, num_classes: int,
                     quantile: float = 0.5, cap: float = 0.9) -> torch.Tensor:
    """Per-class confidence thresholds: the `quantile` of the confidences of the pixels
    predicted as each class, or `cap` where that is lower. With cap = 1 every class keeps the
    same share (1 - quantile) of its pixels, its most confident ones, rare classes included
    (class-balanced, as CBST). A cap below 1 only lowers the thresholds of classes whose
    quantile is above it, the ones predicted most confidently (the easy, frequent ones), so
    those keep more than the share and the others keep it: the cap favours easy classes.
    confidence, prediction (N, H, W) -> (C,); classes never predicted get `cap`.
    ClassThresholds gives the same from batches.

    >>> conf = torch.tensor([[[0.99, 0.97, 0.6, 0.5]]]); pred = torch.tensor([[[0, 0, 1, 1]]])
    >>> class_thresholds(conf, pred, 2, 0.5, 1.0)     # each class's median
    tensor([0.9800, 0.5500])
    >>> class_thresholds(conf, pred, 2, 0.5, 0.9)     # class 0 now keeps both pixels
    tensor([0.9000, 0.5500])
    """
    _check_quantile(quantile)
    thresholds = torch.full((num_classes,), float(cap))
    for c in range(num_classes):
        conf_c = confidence[prediction == c]
        if conf_c.numel():
            thresholds[c] = min(float(torch.quantile(conf_c.float(), quantile)), cap)
    return thresholds


class ClassThresholds:
    """class_thresholds from batches (add(confidence, prediction) per batch, then
    thresholds(quantile, cap)), in bounded memory.

    While at most `exact_budget` pixels have been added, their confidences are kept per class
    and the thresholds are class_thresholds' to the bit (torch.quantile of the same values).
    Past that, each class keeps a histogram of `bins` equal bins over [0, 1] instead, and a
    quantile is read from it by linear interpolation inside its bin: off by less than one
    bin width (1/bins; 1.5e-5 by default). The default budget (2^26 pixels, 256 MiB) holds the
    target split of every embedded preset (up to "full": 6000 images of 64x128 = 49.2M
    pixels), so their thresholds are exact; the Cityscapes train split (1.5G pixels at
    1024x512) switches to the histograms (19 x 2^16 counts, 10 MiB) after 128 images.
    """

    def __init__(self, num_classes: int, exact_budget: int = 2 ** 26, bins: int = 2 ** 16):
        self.num_classes, self.exact_budget, self.bins = num_classes, exact_budget, bins
        self.values = [[] for _ in range(num_classes)]   # exact mode: confidences per class
        self.counts = None                               # histogram mode: (C, bins) int64
        self.added = 0

    @property
    def exact(self) -> bool:
        return self.counts is None

    def add(self, confidence: torch.Tensor, prediction: torch.Tensor):
        confidence = confidence.detach().cpu().float().reshape(-1)
        prediction = prediction.detach().cpu().reshape(-1)
        self.added += confidence.numel()
        if self.exact and self.added > self.exact_budget:
            self.counts = torch.zeros(self.num_classes, self.bins, dtype=torch.int64)
            for c, kept in enumerate(self.values):
                if kept:
                    self._histogram(torch.cat(kept), torch.full((1,), c))
            self.values = None
        if self.exact:
            for c in prediction.unique().tolist():
                self.values[c].append(confidence[prediction == c])
        else:
            self._histogram(confidence, prediction)

    def _histogram(self, confidence, prediction):
        b = (confidence * self.bins).long().clamp(0, self.bins - 1)
        flat = prediction.long() * self.bins + b   # (class, bin) pairs; broadcasts
        self.counts += torch.bincount(flat, minlength=self.num_classes * self.bins).view(
            self.num_classes, self.bins)

    def thresholds(self, quantile: float = 0.5, cap: float = 0.9) -> torch.Tensor:
        """(C,) thresholds, as class_thresholds gives them for every pixel added."""
        _check_quantile(quantile)
        thresholds = torch.full((self.num_classes,), float(cap))
        for c in range(self.num_classes):
            if self.exact and self.values[c]:
                value = float(torch.quantile(torch.cat(self.values[c]), quantile))
            elif not self.exact and self.counts[c].sum():
                value = self._histogram_quantile(self.counts[c], quantile)
            else:
                continue
            thresholds[c] = min(value, cap)
        return thresholds

    def _histogram_quantile(self, counts: torch.Tensor, quantile: float) -> float:
        """torch.quantile's linear rule (position q * (n - 1) among the sorted values), each
        value placed evenly inside its bin: the k-th of m values in bin b sits at
        (b + (k + 0.5) / m) / bins."""
        cum = counts.cumsum(0)
        position = quantile * (int(cum[-1]) - 1)
        lower = int(position)

        def value(rank):  # the rank-th smallest value (0-based), placed inside its bin
            b = int(torch.searchsorted(cum, torch.tensor(rank), right=True))
            before = int(cum[b - 1]) if b else 0
            return (b + (rank - before + 0.5) / int(counts[b])) / self.bins

        upper = min(lower + 1, int(cum[-1]) - 1)
        return value(lower) + (position - lower) * (value(upper) - value(lower))


def filter_pseudo_labels(confidence: torch.Tensor, prediction: torch.Tensor,
                         thresholds: torch.Tensor, weak_labels: torch.Tensor) -> torch.Tensor:
    """Pixel pseudo labels (N, H, W): the prediction where confidence >= its class threshold
    and the class is in the image's weak label (N, C); IGNORE_INDEX elsewhere."""
    n = prediction.shape[0]
    confident = confidence >= thresholds[prediction]
    allowed = weak_labels.bool()[torch.arange(n).view(n, 1, 1), prediction]   # (N, H, W)
    return torch.where(confident & allowed, prediction, torch.full_like(prediction, IGNORE_INDEX))


def make_pseudo_labels(confidence: torch.Tensor, prediction: torch.Tensor,
                       weak_labels: torch.Tensor, num_classes: int, quantile: float = 0.5,
                       cap: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """One round's pixel pseudo labels: per-class thresholds from the confidences
    (class_thresholds), then the weak-label filter (filter_pseudo_labels).

    confidence, prediction (N, H, W): the model's softmax maximum and argmax on the target
    images; weak_labels (N, C): its pseudo-weak labels. Returns (labels (N, H, W) with
    IGNORE_INDEX where no label is given, thresholds (C,))."""
    thresholds = class_thresholds(confidence, prediction, num_classes, quantile, cap)
    return filter_pseudo_labels(confidence, prediction, thresholds, weak_labels), thresholds


def quality_counts(pseudo: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor
                   ) -> np.ndarray:
    """(correct, labelled, valid) pixel counts of pseudo labels against the ground truth:
    what pseudo_label_quality reads, summed over as many batches as needed."""
    pseudo, truth = np.asarray(pseudo), np.asarray(truth)
    valid = truth != IGNORE_INDEX
    labelled = (pseudo != IGNORE_INDEX) & valid
    correct = labelled & (pseudo == truth)
    return np.array([correct.sum(), labelled.sum(), valid.sum()], np.int64)


def quality_from_counts(counts) -> dict:
    """Precision and coverage (%) from summed quality_counts."""
    correct, labelled, valid = (int(x) for x in counts)
    return {"precision": float(100 * correct / max(labelled, 1)),
            "coverage": float(100 * labelled / max(valid, 1))}


def pseudo_label_quality(pseudo: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor):
    """Precision (% of pseudo-labelled pixels that are right) and coverage (% of labelled
    ground-truth pixels that received a pseudo label), against the ground truth."""
    return quality_from_counts(quality_counts(pseudo, truth))
