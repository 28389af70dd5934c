"""Segmentation metrics: confusion matrix, per-class IoU, mIoU, pixel accuracy.

The rule for absent classes: a class that appears neither in the labels nor in the
predictions of the whole evaluated set has no defined IoU (0/0). It gets NaN and is left out
of the mIoU, as in the Cityscapes scripts. A class that appears in only one of the two has
IoU 0 and counts.

Two conventions for protocols that drop Cityscapes classes (SYNTHIA's 16 and 13 classes;
docs/method.md §10):

* "project" (default): ground-truth pixels of a dropped class are void, scored nowhere;
* "official": as cityscapesscripts' evalPixelLevelSemanticLabeling scores predictions on the
  full Cityscapes ground truth: such a pixel is ground truth of a class outside the protocol,
  a false negative of that class (not scored) and a false positive of the class predicted
  there. The mIoU averages the protocol's classes.

With 19 classes nothing is dropped and both conventions agree.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from wsda_lib.core import distributed
from wsda_lib.data.classes import IGNORE_INDEX
from wsda_lib.method.weak_classification import Pooling, image_class_scores


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


CONVENTIONS = ("project", "official")


def outside_counts(pred: torch.Tensor, outside: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C,) int64: how often each class is predicted on the pixels marked `outside` (bool, the
    ground truth of a Cityscapes class that the protocol drops): the extra row of the
    confusion matrix that the official convention scores.

    >>> outside_counts(torch.tensor([0, 1, 1]), torch.tensor([True, True, False]), 2).tolist()
    [1, 1]
    """
    if pred.shape != outside.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != outside-mask shape "
                         f"{tuple(outside.shape)}")
    return torch.bincount(pred[outside.bool()].reshape(-1).long(), minlength=num_classes)


def scores(conf, outside=None) -> dict:
    """Per-class IoU (NaN for absent classes), mIoU and pixel accuracy, in percent, from the
    (C, C) confusion matrix (rows = ground truth).

    outside: None for the project's convention; for the official one, the (C,) counts of
    each class predicted on ground truth of a class outside the protocol (outside_counts):
    they add to that class's false positives, and to the pixels of pixel accuracy.

    >>> scores([[3, 1], [0, 2]], outside=[2, 1])["iou"]
    [50.0, 50.0]
    """
    conf = np.asarray(conf, dtype=np.float64)
    fp_outside = np.zeros(len(conf))
    if outside is not None:
        fp_outside = np.asarray(outside, dtype=np.float64)
        if fp_outside.shape != (len(conf),):
            raise ValueError(f"outside counts have shape {fp_outside.shape}; expected "
                             f"({len(conf)},), one per class of the confusion matrix")
    tp = np.diag(conf)
    union = conf.sum(0) + fp_outside + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    total = conf.sum() + fp_outside.sum()
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


def presence_precision_recall(predicted: torch.Tensor, truth: torch.Tensor,
                              as_tensors: bool = False):
    """Micro-averaged class-presence precision and recall (%) over a batch of (B, C) 0/1
    image-level labels: the pseudo-weak labels' quality, logged during training. Floats, or
    0-d tensors on the labels' device with `as_tensors` (no host sync).

    >>> presence_precision_recall(torch.tensor([[1., 1.]]), torch.tensor([[1., 0.]]))
    (50.0, 100.0)
    """
    tp = (predicted * truth).sum()
    both = 100 * tp / predicted.sum().clamp(min=1), 100 * tp / truth.sum().clamp(min=1)
    return both if as_tensors else tuple(float(v) for v in both)


def check_finite_logits(logits: torch.Tensor, where: str) -> None:
    """Raise FloatingPointError, naming `where`, when logits (any shape) hold NaN or inf: the
    argmax of NaN logits is class 0 everywhere, which would be scored or exported without a
    word (a checkpoint with NaN weights, a diverged model).

    >>> check_finite_logits(torch.tensor([[0.0, float("nan")]]), "batch 0")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FloatingPointError: batch 0: the model's logits are not finite (1 of 2 values NaN or inf); ...
    """
    finite = torch.isfinite(logits)
    if not bool(finite.all()):
        raise FloatingPointError(
            f"{where}: the model's logits are not finite ({int((~finite).sum())} of "
            f"{logits.numel()} values NaN or inf); nothing is scored. Look for NaN/inf weights "
            f"in the checkpoint or a model that diverged")


@torch.no_grad()
def predict(model, images: torch.Tensor, size=None, where: str = "predict") -> torch.Tensor:
    """Class map (B, H, W) from the logits upsampled bilinearly to `size` (default: input).
    Non-finite logits are a FloatingPointError naming `where` (check_finite_logits)."""
    logits, _ = model(images)
    check_finite_logits(logits, where)
    size = size or images.shape[-2:]
    logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    # max(1).indices is argmax(1), first maximum on ties (both documented so), and on a CPU
    # ~7x faster at (32, 10, 64, 128): argmax reduces along the strided class axis slowly.
    return logits.max(1).indices


def eval_loader(dataset, batch_size: int) -> DataLoader:
    """A loader over this process's disjoint shard of `dataset` (all of it in one process);
    `evaluate` sums the shards' confusion matrices."""
    if distributed.is_distributed():
        dataset = Subset(dataset, distributed.shard(len(dataset)))
    return DataLoader(dataset, batch_size=batch_size)


def base_split(dataset):
    """The split under a Subset (a shard), WithItems or TranslatedSource wrapper."""
    while hasattr(dataset, "dataset") or hasattr(dataset, "split"):
        inner = getattr(dataset, "dataset", None)
        dataset = inner if inner is not None else dataset.split
    return dataset


def split_name(dataset) -> str:
    """The name a split goes by in messages: its `name`, else its type."""
    base = base_split(dataset)
    return str(getattr(base, "name", None) or type(base).__name__)


def batch_where(name: str, index: int, batch: dict) -> str:
    """"split 'NAME', batch INDEX (its first image names)", for errors about one batch."""
    names = [str(n) for n in batch.get("name", [])]
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"split {name!r}, batch {index}" + (f" ({shown})" if names else "")


def _images_total(dataset) -> tuple[int, int]:
    """(images the dataset could score, pairs its reader left out for size mismatches)."""
    dataset = base_split(dataset)
    left_out = len(getattr(dataset, "mismatched", ()))
    return len(dataset) + left_out, left_out


def _accumulate(model, loader, num_classes: int, device, convention: str):
    """(confusion (C, C), outside counts (C,), images (1,), whether batches mark outside) of
    this process's loader; errors as evaluate's."""
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    outside = torch.zeros(num_classes, dtype=torch.int64)
    images, marked = torch.zeros(1, dtype=torch.int64), False
    name = split_name(loader.dataset)
    for b, batch in enumerate(loader):
        marked = "outside" in batch
        if convention == "official" and not marked:
            raise ValueError("convention='official' needs batches that mark the ground truth "
                             "of classes outside the protocol: open the split with "
                             "mark_outside=True (wsda_lib.data.load does so for target_val "
                             "and target_test)")
        pred = predict(model, batch["image"].to(device), batch["label"].shape[-2:],
                       where=batch_where(name, b, batch)).cpu()
        conf += confusion_matrix(pred, batch["label"], num_classes)
        if marked:
            outside += outside_counts(pred, batch["outside"], num_classes)
        images += len(pred)
    return conf, outside, images, marked


@torch.no_grad()
def evaluate(model, loader, num_classes: int, device="cpu", convention: str = "project") -> dict:
    """Run `model` in eval mode over a loader of {"image", "label"} batches; the logits are
    upsampled bilinearly to each label's resolution (native 2048x1024 for Cityscapes val, as
    the paper). BatchNorm uses its running statistics: evaluation never adapts the model to
    the evaluated domain. Under torchrun the loader should come from `eval_loader`; the
    confusion matrices of all ranks are summed.

    convention: "project" or "official" (module docstring); "official" needs batches with
    "outside" masks (a FileSegmentation opened with mark_outside=True, as
    wsda_lib.data.load opens target_val and target_test), else a ValueError. Logits that hold
    NaN or inf are a FloatingPointError naming the split and the batch (and its images).

    Returns scores() in percent ("iou" (C,), "miou", "pixel_acc") and
    "convention"; "confusion" (C, C) counts, rows = ground truth; "outside_protocol" (C,)
    counts of each class predicted on ground truth outside the protocol (when the batches
    mark it); "images": images scored; "images_total": images of the split, those its reader
    left out for an image/label size mismatch included; "scored_on": "N of M images", plus
    "(K left out: image/label sizes differ)" when K > 0, for callers to print.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    was_training = model.training
    distributed.broadcast_buffers(model)
    model.eval()
    try:
        conf, outside, images, marked = _accumulate(model, loader, num_classes, device,
                                                    convention)
    finally:
        model.train(was_training)
    if distributed.is_distributed():
        summed = distributed.all_reduce_sum(torch.cat([conf.reshape(-1), outside, images])
                                            .to(device)).cpu()
        conf = summed[: num_classes ** 2].reshape(num_classes, num_classes)
        outside, images = summed[num_classes ** 2: -1], summed[-1:]
    total, left_out = _images_total(loader.dataset)
    n = int(images)
    result = {**scores(conf, outside if convention == "official" else None),
              "convention": convention, "confusion": conf.tolist()}
    if marked:
        result["outside_protocol"] = outside.tolist()
    scored_on = f"{n} of {total} images"
    if left_out:
        scored_on += f" ({left_out} left out: image/label sizes differ)"
    return {**result, "images": n, "images_total": total, "scored_on": scored_on}


@torch.no_grad()
def class_presence(model, split, device, pool: Pooling, batch_size: int = 64):
    """Image-level class scores P_c (N, C) of a model (in eval mode) on a split, pooled by
    `pool` (Pooling.from_config(cfg.adapt) for what a config trains with), and the split's
    own image-level labels (N, C), for presence precision/recall (None for a split without
    them: target train from folders with neither label maps nor data.image_labels)."""
    model.eval()
    scores = [image_class_scores(model(b["image"].to(device))[0], pool).cpu()
              for b in DataLoader(split, batch_size=batch_size)]
    truth = np.asarray(split.weak_labels) if getattr(split, "has_image_labels", True) else None
    return torch.cat(scores).numpy(), truth
