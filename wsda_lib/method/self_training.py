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

from ..data.classes import IGNORE_INDEX


def class_thresholds(confidence: torch.Tensor, prediction: torch.Tensor, num_classes: int,
                     quantile: float = 0.5, cap: float = 0.9) -> torch.Tensor:
    """Per-class confidence thresholds: the `quantile` of the confidences of the pixels
    predicted as each class, capped at `cap` (so every class keeps its most confident pixels,
    rare ones included). confidence, prediction (N, H, W) -> (C,); classes never predicted
    get `cap`."""
    if not 0 <= quantile <= 1:
        raise ValueError(f"self-training quantile must be in [0, 1], got {quantile}")
    thresholds = torch.full((num_classes,), float(cap))
    for c in range(num_classes):
        conf_c = confidence[prediction == c]
        if conf_c.numel():
            thresholds[c] = min(float(torch.quantile(conf_c.float(), quantile)), cap)
    return thresholds


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


def pseudo_label_quality(pseudo: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor):
    """Precision (% of pseudo-labelled pixels that are right) and coverage (% of labelled
    ground-truth pixels that received a pseudo label), against the ground truth."""
    pseudo, truth = np.asarray(pseudo), np.asarray(truth)
    valid = truth != IGNORE_INDEX
    labelled = (pseudo != IGNORE_INDEX) & valid
    correct = labelled & (pseudo == truth)
    return {"precision": float(100 * correct.sum() / max(labelled.sum(), 1)),
            "coverage": float(100 * labelled.sum() / max(valid.sum(), 1))}
