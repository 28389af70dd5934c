"""Inference-only helpers that turn a trained model into what the notebooks plot: class
presence, attention maps, category features. Nothing here trains."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from .method.category_alignment import category_attention, category_features
from .method.weak_classification import image_class_scores


@torch.no_grad()
def class_presence(model, split, device, r: float = 1.0, batch_size: int = 64):
    """Image-level class scores P_c (N, C) of a model on a split, and the split's own
    image-level labels (N, C), for presence precision/recall."""
    model.eval()
    scores = [image_class_scores(model(b["image"].to(device))[0], r).cpu()
              for b in DataLoader(split, batch_size=batch_size)]
    return torch.cat(scores).numpy(), np.asarray(split.weak_labels)


@torch.no_grad()
def attention_maps(model, images: torch.Tensor) -> torch.Tensor:
    """Per-class attention α (B, C, h, w) of a model on images (B, 3, H, W)."""
    model.eval()
    logits, _ = model(images)
    return category_attention(logits).view_as(logits)


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
