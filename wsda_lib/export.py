"""Predictions in Cityscapes format, so that the official Cityscapes scripts can score them."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader

from .evaluate import predict


@torch.no_grad()
def export_cityscapes(model, dataset, out_dir: str | Path, device="cpu",
                      batch_size: int = 1) -> list[Path]:
    """Write one labelId PNG per image, `<image stem>.png` in out_dir, predicted at the
    label's resolution (logits upsampled, 2048x1024 for Cityscapes val). Returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    written = []
    for batch in DataLoader(dataset, batch_size=batch_size):
        pred = predict(model, batch["image"].to(device), batch["label"].shape[-2:]).cpu().numpy()
        for name, p in zip(batch["name"], pred, strict=True):
            path = out_dir / f"{Path(name).stem}.png"
            Image.fromarray(dataset.protocol.to_label_ids(p)).save(path)
            written.append(path)
    return written
