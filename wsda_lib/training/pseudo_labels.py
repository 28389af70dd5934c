"""Self-training's pixel pseudo labels (docs/method.md §16): a trained model's predictions on a
target split, filtered by per-class confidence thresholds and by the image's weak labels,
held in memory for a few images (the notebooks) or written to a folder for a whole split
(training reads them back per item). Nothing here trains."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from wsda_lib.core.atomic import atomic_write, write_json
from wsda_lib.method.self_training import (
    ClassThresholds,
    class_thresholds,
    filter_pseudo_labels,
    pseudo_label_quality,
    quality_counts,
    quality_from_counts,
)
from wsda_lib.method.weak_classification import Pooling, pseudo_weak_labels


@torch.no_grad()
def pixel_prediction_batches(model, split, adapt, device, batch_size: int = 32, indices=None):
    """pixel_predictions one batch at a time: yields (confidence (B, H, W), prediction
    (B, H, W), weak labels (B, C), labels (B, H, W)) on the CPU, in the split's order
    (or that of `indices`). The weak labels are the model's pseudo-weak labels, or the
    split's human image labels when adapt.weak_labels is "image" or "point" (WDA). The
    model is in eval mode."""
    model.eval()
    images = split if indices is None else torch.utils.data.Subset(split, list(indices))
    for batch in DataLoader(images, batch_size=batch_size):
        logits, _ = model(batch["image"].to(device))
        up = F.interpolate(logits, size=batch["label"].shape[-2:], mode="bilinear",
                           align_corners=False)
        conf, pred = torch.softmax(up, 1).max(1)
        weak = batch["weak_label"] if adapt.weak_labels in ("image", "point") else \
            pseudo_weak_labels(logits, adapt.pseudo_threshold, Pooling.from_config(adapt))
        yield conf.cpu(), pred.cpu(), weak.cpu(), batch["label"]


def pixel_predictions(model, split, adapt, device, batch_size: int = 32, indices=None):
    """The model's confidence (N, H, W) (softmax maximum) and prediction (N, H, W) at the
    labels' size, and the weak labels (N, C) that filter them (`pixel_prediction_batches`:
    its pseudo-weak labels at threshold adapt.pseudo_threshold, or a person's image labels
    for WDA), on the split's images (or those at `indices`)."""
    conf, pred, weak, _ = zip(*pixel_prediction_batches(model, split, adapt, device,
                                                        batch_size, indices), strict=True)
    return torch.cat(conf), torch.cat(pred), torch.cat(weak)


def _label_steps(conf, pred, weak, thresholds) -> dict:
    """The three steps of pseudo_label_maps from a batch's predictions and the thresholds."""
    everything = torch.ones_like(weak)
    return {"raw": filter_pseudo_labels(conf, pred, torch.zeros_like(thresholds), everything),
            "confidence_only": filter_pseudo_labels(conf, pred, thresholds, everything),
            "filtered": filter_pseudo_labels(conf, pred, thresholds, weak)}


def pseudo_label_maps(model, split, adapt, device, batch_size: int = 32, indices=None,
                      thresholds=None) -> dict:
    """Self-training's pixel pseudo labels for a target split (the extension's round), with
    the two steps that make them: "raw" (every prediction), "confidence_only" (per-class
    confidence thresholds only) and "filtered" (confident *and* in the image's weak label,
    pseudo-weak or a person's: the labels trained on). Each map is (N, H, W) uint8, 255 = no label.

    Also returns "thresholds" (C,) and "quality": each map's precision and coverage (%)
    against the split's ground truth (read only to report it). With `indices`, only those
    images are labelled, and the thresholds are theirs unless `thresholds` (C,) gives them: a
    self-training round's (its metrics["thresholds"], over the whole split) reproduce the very
    labels that round trained on for these images. Holds every map in memory: for a few
    images (the notebooks); training writes them to disk (write_pseudo_labels)."""
    conf, pred, weak = pixel_predictions(model, split, adapt, device, batch_size, indices)
    thresholds = (class_thresholds(conf, pred, split.class_set.num_classes, adapt.st_quantile,
                                   adapt.st_cap) if thresholds is None else
                  torch.as_tensor(thresholds, dtype=conf.dtype))
    maps = _label_steps(conf, pred, weak, thresholds)
    truth = split.labels_array() if indices is None else np.stack([split.label(i)
                                                                   for i in indices])
    return {**{k: v.numpy().astype(np.uint8) for k, v in maps.items()},
            "thresholds": thresholds.tolist(),
            "quality": {k: pseudo_label_quality(v, truth) for k, v in maps.items()}}


PSEUDO_LABEL_RECORD = "pseudo_labels.json"


def pseudo_label_file(folder: str | Path, i: int) -> Path:
    """Where write_pseudo_labels puts image i's pseudo labels."""
    return Path(folder) / f"{i:06d}.png"


def pseudo_label_folder(root: str | Path, model, split, config: dict, seed: int) -> Path:
    """`root`/pseudo_labels/<key>: where write_pseudo_labels puts the labels of `model` on
    `split`, the key a hash of the model's weights (every tensor of its state dict), the
    config (a dict), the seed and the split's name and item names, so that a folder is
    reused only for the very same labels."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps({"config": config, "seed": seed, "split": split.name},
                        sort_keys=True, default=str).encode())
    for i in range(len(split)):
        h.update(f"\n{split.item_name(i)}".encode())
    return Path(root) / "pseudo_labels" / f"{split.name}-{h.hexdigest()[:16]}"


def write_pseudo_labels(model, split, adapt, device, folder: str | Path,
                        batch_size: int = 32, exact_budget: int = 2 ** 26) -> dict:
    """pseudo_label_maps for a whole split in bounded memory: the "filtered" map of image i
    is written to `folder`/pseudo_label_file(i) (an 8-bit PNG at the label size, 255 = no
    label), and the rest is returned: {"thresholds", "quality", "exact_thresholds",
    "folder"}, also kept in `folder`/pseudo_labels.json, written last. A folder that already
    has that record is reused as it is, so name it after what decides the labels
    (pseudo_label_folder; stages.adaptation_data does).

    Two passes of the model in eval mode, one batch at a time: the first gathers the
    per-class confidences for the thresholds (method.self_training.ClassThresholds: exact up
    to `exact_budget` pixels, within 1/65536 beyond), the second labels, writes and counts.
    The maps, thresholds and quality are pseudo_label_maps' whenever the thresholds are
    exact (the embedded benchmark). A split without pixel labels (has_pixel_labels False)
    has no quality: {} there."""
    folder = Path(folder)
    record = folder / PSEUDO_LABEL_RECORD
    if record.is_file():
        done = json.loads(record.read_text(encoding="utf-8"))
        if done.pop("images", None) == len(split):
            return {**done, "folder": str(folder)}
    folder.mkdir(parents=True, exist_ok=True)
    stats = ClassThresholds(split.class_set.num_classes, exact_budget)
    for conf, pred, _, _ in pixel_prediction_batches(model, split, adapt, device, batch_size):
        stats.add(conf, pred)
    thresholds = stats.thresholds(adapt.st_quantile, adapt.st_cap)
    counts, i = {}, 0
    for conf, pred, weak, truth in pixel_prediction_batches(model, split, adapt, device,
                                                            batch_size):
        for name, labels in _label_steps(conf, pred, weak, thresholds).items():
            labels = labels.numpy().astype(np.uint8)
            if getattr(split, "has_pixel_labels", True):
                counts[name] = counts.get(name, 0) + quality_counts(labels, truth)
            if name == "filtered":
                for lb in labels:
                    _write_png(pseudo_label_file(folder, i), lb)
                    i += 1
    result = {"thresholds": thresholds.tolist(),
              "quality": {k: quality_from_counts(v) for k, v in counts.items()},
              "exact_thresholds": stats.exact}
    write_json(record, {**result, "images": len(split)})
    return {**result, "folder": str(folder)}


def _write_png(path: Path, label: np.ndarray):
    buf = io.BytesIO()
    Image.fromarray(label).save(buf, format="PNG")
    atomic_write(path, lambda f: f.write(buf.getvalue()))
