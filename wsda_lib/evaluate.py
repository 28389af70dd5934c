"""Segmentation metrics: confusion matrix, per-class IoU, mIoU, pixel accuracy.

The rule for absent classes: a class that appears neither in the labels nor in the
predictions of the whole evaluated set has no defined IoU (0/0). It gets NaN and is left out
of the mIoU, as in the Cityscapes scripts. A class that appears in only one of the two has
IoU 0 and counts.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from . import distributed
from .data.classes import IGNORE_INDEX


def confusion_matrix(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) int64 counts, rows = ground truth, columns = prediction; 255 is skipped.

    >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 255]), 2).tolist()
    [[1, 0], [0, 1]]
    """
    if pred.shape != label.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != label shape "
                         f"{tuple(label.shape)}")
    pred, label = pred.reshape(-1).long(), label.reshape(-1).long()
    valid = label != IGNORE_INDEX
    bad = valid & ((label < 0) | (label >= num_classes))
    if bad.any():
        raise ValueError(f"label ids {torch.unique(label[bad]).tolist()} are outside "
                         f"0..{num_classes - 1} and are not the ignore index {IGNORE_INDEX}")
    idx = label[valid] * num_classes + pred[valid]
    return torch.bincount(idx, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def scores(conf) -> dict:
    """Per-class IoU (NaN for absent classes), mIoU and pixel accuracy, in percent."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    total = conf.sum()
    return {
        "iou": (100 * iou).tolist(),
        "miou": float(100 * np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "pixel_acc": float(100 * tp.sum() / total) if total > 0 else float("nan"),
    }


def presence_scores(pred_present: np.ndarray, true_present: np.ndarray) -> dict:
    """Class-presence precision and recall per class, from (N, C) 0/1 arrays, in percent.

    Precision is low where the model hallucinates a class that is not in the image.
    """
    pred_present, true_present = np.asarray(pred_present, bool), np.asarray(true_present, bool)
    tp = (pred_present & true_present).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(pred_present.sum(0) > 0, tp / pred_present.sum(0), np.nan)
        recall = np.where(true_present.sum(0) > 0, tp / true_present.sum(0), np.nan)
    return {"precision": (100 * precision).tolist(), "recall": (100 * recall).tolist()}


def presence_precision_recall(predicted: torch.Tensor, truth: torch.Tensor):
    """Micro-averaged class-presence precision and recall (%) over a batch of (B, C) 0/1
    image-level labels: the pseudo-weak labels' quality, logged during training.

    >>> presence_precision_recall(torch.tensor([[1., 1.]]), torch.tensor([[1., 0.]]))
    (50.0, 100.0)
    """
    tp = (predicted * truth).sum()
    return (float(100 * tp / predicted.sum().clamp(min=1)),
            float(100 * tp / truth.sum().clamp(min=1)))


@torch.no_grad()
def predict(model, images: torch.Tensor, size=None) -> torch.Tensor:
    """Class map (B, H, W) from the logits upsampled bilinearly to `size` (default: input)."""
    logits, _ = model(images)
    size = size or images.shape[-2:]
    logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits.argmax(1)


def eval_loader(dataset, batch_size: int) -> DataLoader:
    """A loader over this process's disjoint shard of `dataset` (all of it in one process);
    `evaluate` sums the shards' confusion matrices."""
    if distributed.is_distributed():
        dataset = Subset(dataset, distributed.shard(len(dataset)))
    return DataLoader(dataset, batch_size=batch_size)


@torch.no_grad()
def evaluate(model, loader, num_classes: int, device="cpu") -> dict:
    """Run `model` in eval mode over a loader of {"image", "label"} batches; returns scores
    plus the confusion matrix. BatchNorm uses its running statistics: evaluation never adapts
    the model to the evaluated domain. Under torchrun the loader should come from
    `eval_loader`; the confusion matrices of all ranks are summed."""
    was_training = model.training
    distributed.broadcast_buffers(model)
    model.eval()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for batch in loader:
        pred = predict(model, batch["image"].to(device), batch["label"].shape[-2:])
        conf += confusion_matrix(pred.cpu(), batch["label"], num_classes)
    if distributed.is_distributed():
        conf = distributed.all_reduce_sum(conf.to(device)).cpu()
    model.train(was_training)
    return {**scores(conf), "confusion": conf.tolist()}
