"""Inference-only helpers that turn a trained model into what the notebooks plot and what
self-training needs: class presence, attention maps, category features and their 2-D
projection, pixel predictions and pseudo labels with their quality. Nothing here trains."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from wsda_lib.data.classes import IGNORE_INDEX
from wsda_lib.method.category_alignment import category_attention, category_features
from wsda_lib.training.evaluate import confusion_matrix


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
    scores (C,) P_c of some model (session.Session.attention: the source-only model's).

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
