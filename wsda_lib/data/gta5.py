"""GTA5 (Richter et al. 2016): `images/*.png` and `labels/*.png`, labels in Cityscapes
labelIds stored as palette indices. Resized to 1280x720 for training, as in the paper.

A few GTA5 images and labels differ in size; they are left out and reported (see files.py).
Any other file in images/ or labels/ (a label without its image, a .jpg) is listed by
`check()`.
"""

from __future__ import annotations

from pathlib import Path

from .classes import protocol
from .files import DatasetError, FileSegmentation, read_index_png, unpaired_files

PAPER_SIZE = (1280, 720)  # (width, height)


def gta5(root: str | Path, size=PAPER_SIZE, num_classes: int = 19, **kwargs):
    """The GTA5 tree at root as a FileSegmentation; kwargs go to it (checking, ...)."""
    root = Path(root)
    if not (root / "images").is_dir():
        raise DatasetError(f"{root}: no images/ folder; expected GTA5's images/*.png and "
                           f"labels/*.png")
    images = sorted((root / "images").glob("*.png"))
    pairs = [(p, root / "labels" / p.name) for p in images]
    # Only the checker lists the files a reader does not read (a scan of both folders).
    unpaired = [] if not kwargs.get("checking") else (
        unpaired_files(root / "images", "*.png", set(images))
        + unpaired_files(root / "labels", "*.png", {lb for _, lb in pairs}, label=True))
    return FileSegmentation(f"gta5 {root}", pairs, protocol(num_classes), "cityscapes",
                            read_index_png, size, unpaired=unpaired, **kwargs)
