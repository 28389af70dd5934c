"""Predictions in Cityscapes format, so that the official Cityscapes scripts can score them."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader

from .evaluate import predict


def _native_size(dataset, index: int, label: torch.Tensor) -> tuple[int, int]:
    """(height, width) of item `index`'s ground truth as stored: the label file's header for
    file datasets (whatever their resize setting), else the label the dataset gives."""
    base = dataset
    while hasattr(base, "split"):  # WithItems
        base = base.split
    if hasattr(base, "native_label_size"):
        width, height = base.native_label_size(index)
        return height, width
    return tuple(label.shape[-2:])


@torch.no_grad()
def export_cityscapes(model, dataset, out_dir: str | Path, device="cpu",
                      batch_size: int = 1) -> list[Path]:
    """Write one labelId PNG (uint8, H x W) per image, `<image stem>.png` in out_dir, for
    cityscapesscripts' evalPixelLevelSemanticLabeling. Predictions are made at the ground
    truth's native resolution (the logits upsampled to the label file's size, 2048x1024 for
    Cityscapes val), whatever size the dataset resizes its images and labels to: the official
    script refuses predictions of another size. Returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    written = []
    for batch in DataLoader(dataset, batch_size=batch_size):
        images = batch["image"].to(device)
        sizes = [_native_size(dataset, int(i), lb)
                 for i, lb in zip(batch["index"], batch["label"], strict=True)]
        if len(set(sizes)) == 1:
            preds = list(predict(model, images, sizes[0]).cpu().numpy())
        else:  # labels of several sizes in one batch: one image at a time
            preds = [predict(model, images[k: k + 1], s)[0].cpu().numpy()
                     for k, s in enumerate(sizes)]
        for name, p in zip(batch["name"], preds, strict=True):
            path = out_dir / f"{Path(name).stem}.png"
            Image.fromarray(dataset.protocol.to_label_ids(p)).save(path)
            written.append(path)
    model.train(was_training)
    return written
