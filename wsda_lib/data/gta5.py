"""GTA5 (Richter et al. 2016): `images/*.png` and `labels/*.png`, labels in Cityscapes
labelIds stored as palette indices. Resized to 1280x720 for training, as in the paper.

A few GTA5 images and labels differ in size; they are left out and reported (see files.py).
"""

from __future__ import annotations

from pathlib import Path

from .classes import protocol
from .files import DatasetError, FileSegmentation, read_index_png

PAPER_SIZE = (1280, 720)  # (width, height)


def gta5(root: str | Path, size=PAPER_SIZE, num_classes: int = 19, **kwargs):
    root = Path(root)
    if not (root / "images").is_dir():
        raise DatasetError(f"{root}: no images/ folder; expected GTA5's images/*.png and "
                           f"labels/*.png")
    pairs = [(p, root / "labels" / p.name) for p in sorted((root / "images").glob("*.png"))]
    return FileSegmentation(f"gta5 {root}", pairs, protocol(num_classes), "cityscapes",
                            read_index_png, size, **kwargs)
