"""Inference-only helpers that turn a trained model into what the notebooks plot and what
self-training needs: class presence, attention maps, category features and their 2-D
projection, pixel predictions and pseudo labels with their quality. Nothing here trains."""

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

from .atomic import atomic_write, write_json
from .data.classes import IGNORE_INDEX
from .evaluate import confusion_matrix
from .method.category_alignment import category_attention, category_features
from .method.self_training import (
    ClassThresholds,
    class_thresholds,
    filter_pseudo_labels,
    pseudo_label_quality,
    quality_counts,
    quality_from_counts,
)
from .method.weak_classification import Pooling, image_class_scores, pseudo_weak_labels


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


@torch.no_grad()
def attention_maps(model, images: torch.Tensor) -> torch.Tensor:
    """Per-class attention α (B, C, h, w) of a model on images (B, 3, H, W)."""
    model.eval()
    logits, _ = model(images)
    return category_attention(logits).view_as(logits)


def attention_classes(label, weak_label, scores) -> list[int]:
    """The classes whose attention the series shows for one image, in this order: its
    largest present class, its smallest present one, and the absent class scored highest
    (P_c: the one most hallucinated); fewer when the image has fewer.

    label (H, W) class indices (255 = ignore); weak_label (C,) 0/1 image-level label;
    scores (C,) P_c of some model (notebook.Session.attention: the source-only model's).

    >>> attention_classes(np.array([[0, 0, 0, 1]]), np.array([1, 1, 0, 0]),
    ...                   np.array([0.9, 0.5, 0.1, 0.4]))
    [0, 1, 3]
    """
    label, weak = np.asarray(label), np.asarray(weak_label)
    present = [c for c in np.flatnonzero(weak)]
    area = {c: int((label == c).sum()) for c in present}
    chosen = []
    if present:
        chosen.append(max(present, key=area.get))
        rest = [c for c in present if c != chosen[0]]
        if rest:
            chosen.append(min(rest, key=area.get))
    absent = [c for c in range(len(weak)) if not weak[c]]
    if absent:
        chosen.append(max(absent, key=lambda c: float(scores[c])))
    return [int(c) for c in chosen]


def attention_on_class(attention: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """The share (%) of each class's attention mass that falls on that class's ground-truth
    pixels: attention α (B, C, h, w) is upsampled bilinearly to the labels' (B, H, W),
    renormalised to sum to 1 per (image, class), and summed over the pixels labelled c.
    Returns (B, C); 100 = all of α_c on class c, and an α_c spread evenly over the image
    scores the class's area share. Pixels labelled 255 count as not-c.

    >>> att = torch.tensor([[[[0.75, 0.25]]]])               # one class, a 1x2 map
    >>> attention_on_class(att, torch.tensor([[[0, 255]]])).round(1).tolist()
    [[75.0]]
    """
    up = F.interpolate(attention, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    up = up.clamp(min=0)
    up = up / up.flatten(2).sum(2).clamp(min=1e-12)[..., None, None]
    onehot = torch.stack([labels == c for c in range(attention.shape[1])], 1).float()
    return (100 * (up * onehot).flatten(2).sum(2)).numpy()


@torch.no_grad()
def attention_share(model, split, device, n: int = 200, batch_size: int = 50) -> dict:
    """Per class (C,): "on_class", the mean over the first n images of `split` that contain
    the class (their image-level label) of the share (%) of its attention on its own pixels
    (attention_on_class); "area", the mean share (%) of those images that the class covers,
    i.e. what attention spread evenly would score. NaN for a class no image contains."""
    model.eval()
    on, area, present = [], [], []
    for b in DataLoader(torch.utils.data.Subset(split, range(min(n, len(split)))),
                        batch_size=batch_size):
        att, labels = attention_maps(model, b["image"].to(device)).cpu(), b["label"]
        on.append(attention_on_class(att, labels))
        area.append(np.stack([(labels == c).float().mean((1, 2)).numpy() * 100
                              for c in range(att.shape[1])], 1))
        present.append(b["weak_label"].numpy() > 0)
    on, area, present = np.concatenate(on), np.concatenate(area), np.concatenate(present)

    def mean(x):  # over the images that contain each class
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(present.any(0), (x * present).sum(0) / present.sum(0), np.nan)
    return {"on_class": mean(on).tolist(), "area": mean(area).tolist()}


@torch.no_grad()
def category_feature_sample(model, split, device, n: int = 200, batch_size: int = 64):
    """Category features F (n, C, D) of the first n images of a split, with their image-level
    labels (n, C): a feature is only meaningful for a class the image contains."""
    model.eval()
    feats = []
    for b in DataLoader(torch.utils.data.Subset(split, range(min(n, len(split)))),
                        batch_size=batch_size):
        logits, x = model(b["image"].to(device))
        feats.append(category_features(logits, x).cpu())
    return torch.cat(feats).numpy(), np.asarray(split.weak_labels[:n])


def pca_2d(x: np.ndarray) -> np.ndarray:
    """Project rows of x (N, D) on their first two principal components."""
    x = np.asarray(x, np.float64)
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


def category_projection(model, benchmark, device, classes, n: int = 120):
    """Category features of the first n images of source val and target val, for the given
    class indices, projected together on their first two principal components.

    Returns (points (M, 2), class index (M,), domain (M,) "source"/"target"); an (image,
    class) pair counts only when the image contains the class (its image-level label)."""
    feats, cls, dom = [], [], []
    for split in ("source_val", "target_val"):
        f, present = category_feature_sample(model, benchmark[split], device, n)
        for c in classes:
            keep = present[:, c] > 0
            feats.append(f[keep, c])
            cls += [c] * int(keep.sum())
            dom += [split.split("_")[0]] * int(keep.sum())
    return pca_2d(np.concatenate(feats)), np.array(cls), np.array(dom)


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


def domain_separation(model, benchmark, device, classes, n: int = 120) -> dict:
    """How far apart the two domains' category features of each class are: the distance
    between the source val and target val centroids of F_c, divided by the features'
    average spread (root mean squared distance to their own domain's centroid). 0 means the
    domains coincide; well above 1 means they sit apart. Uses the first n images of each
    split, and only images that contain the class. Returns {class index: separation}."""
    sample = {s: category_feature_sample(model, benchmark[s], device, n)
              for s in ("source_val", "target_val")}
    out = {}
    for c in classes:
        groups = [f[present[:, c] > 0, c] for f, present in sample.values()]
        if min(len(g) for g in groups) < 2:
            continue
        centroids = [g.mean(0) for g in groups]
        spread = np.sqrt(np.mean([((g - m) ** 2).sum(1).mean()
                                  for g, m in zip(groups, centroids, strict=True)]))
        out[c] = float(np.linalg.norm(centroids[0] - centroids[1]) / max(spread, 1e-12))
    return out


def pseudo_label_classes(pseudo, truth, num_classes: int) -> dict:
    """Per class, how self-training's pixel pseudo labels (this project's extension,
    docs/method.md §11) compare with the ground truth: (N, H, W) pseudo labels and labels,
    255 = no label / ignored.

    Returns (C,) arrays, in %: "precision" (of the pixels labelled c, the share truly c; NaN
    if none is), "recall" (of the pixels truly c, the share labelled c), "share_of_labels"
    (of all pseudo-labelled pixels, the share labelled c), "share_of_pixels" (of the labelled
    ground-truth pixels, the share truly c); and "confusion" (C, C) pixel counts, rows = true
    class, columns = pseudo label, over pixels that have both.

    >>> out = pseudo_label_classes(np.array([[0, 1, 1, 255]]), np.array([[0, 0, 1, 1]]), 2)
    >>> out["precision"].tolist(), out["recall"].tolist(), out["share_of_labels"].round(1).tolist()
    ([100.0, 50.0], [50.0, 50.0], [33.3, 66.7])
    """
    pseudo, truth = np.asarray(pseudo).ravel(), np.asarray(truth).ravel()
    valid, labelled_px = truth != IGNORE_INDEX, pseudo != IGNORE_INDEX
    conf = confusion_matrix(torch.as_tensor(pseudo[labelled_px]),
                            torch.as_tensor(truth[labelled_px]), num_classes).numpy()
    true_pixels = np.bincount(truth[valid].astype(np.int64), minlength=num_classes)
    right, labelled = np.diag(conf).astype(float), conf.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"precision": 100 * right / np.where(labelled > 0, labelled, np.nan),
                "recall": 100 * right / np.where(true_pixels > 0, true_pixels, np.nan),
                "share_of_labels": 100 * labelled / max(labelled.sum(), 1),
                "share_of_pixels": 100 * true_pixels / max(true_pixels.sum(), 1),
                "confusion": conf}


def filter_effect(quality: dict) -> str:
    """One sentence on what self-training's weak-label filter did, from the precision and
    coverage (%) of the "confidence_only" and "filtered" pixel pseudo labels.

    >>> q = {"confidence_only": {"coverage": 76.8, "precision": 89.31},
    ...      "filtered": {"coverage": 76.7, "precision": 89.33}}
    >>> filter_effect(q)[-28:]
    'and left precision at 89.3%.'
    >>> q["filtered"]["precision"] = 91.0
    >>> filter_effect(q)[-40:]
    'and moved precision from 89.3% to 91.0%.'
    """
    conf, filt = quality["confidence_only"], quality["filtered"]
    removed = conf["coverage"] - filt["coverage"]
    if removed < 0.05:
        return (f"The weak-label filter removed nothing beyond the confidence thresholds "
                f"(coverage {filt['coverage']:.1f}% either way): the pseudo-weak labels mark "
                f"every class the model predicts as present, so they cannot veto any.")
    moved = filt["precision"] - conf["precision"]
    precision = (f"left precision at {filt['precision']:.1f}%" if abs(moved) < 0.05 else
                 f"moved precision from {conf['precision']:.1f}% to {filt['precision']:.1f}%")
    return (f"The weak-label filter removed {removed:.1f} points of coverage beyond the "
            f"confidence thresholds ({conf['coverage']:.1f}% -> {filt['coverage']:.1f}%), and "
            f"{precision}.")
