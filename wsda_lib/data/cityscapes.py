"""Cityscapes (Cordts et al. 2016): `leftImg8bit/{split}/<city>/*_leftImg8bit.png` and
`gtFine/{split}/<city>/*_gtFine_labelIds.png`, labelIds mapped to trainIds.

Training resizes to 1024x512 as in the paper; evaluation keeps the labels at 2048x1024 and
upsamples the logits to them (see evaluate.py).
"""

from __future__ import annotations

from pathlib import Path

from .classes import protocol
from .files import DatasetError, FileSegmentation, read_index_png, unpaired_files

PAPER_SIZE = (1024, 512)  # (width, height) of training inputs
# Files Cityscapes ships next to the labelIds that the reader does not need: not reported.
COMPANIONS = ("_gtFine_color.png", "_gtFine_instanceIds.png", "_gtFine_labelTrainIds.png",
              "_gtFine_polygons.json")


def cityscapes(root: str | Path, split: str = "train", size=PAPER_SIZE, num_classes: int = 19,
               **kwargs):
    """Cityscapes `split` ("train" or "val") at root as a FileSegmentation; kwargs go to it
    (resize_labels, checking, ...). Other files under leftImg8bit/{split}/ and
    gtFine/{split}/ (a labelIds file without its image, a stray file) are listed by
    `check()`; the companion files in COMPANIONS are not."""
    root = Path(root)
    images = root / "leftImg8bit" / split
    if not images.is_dir():
        raise DatasetError(f"{root}: no leftImg8bit/{split}/ folder; expected Cityscapes' "
                           f"leftImg8bit/{{train,val}}/<city>/*_leftImg8bit.png")
    pairs = []
    for p in sorted(images.glob("*/*_leftImg8bit.png")):
        stem = p.name[: -len("_leftImg8bit.png")]
        pairs.append((p, root / "gtFine" / split / p.parent.name / f"{stem}_gtFine_labelIds.png"))
    # Only the checker lists the files a reader does not read (a scan of both folders).
    unpaired = [] if not kwargs.get("checking") else (
        unpaired_files(images, "*/*_leftImg8bit.png", {im for im, _ in pairs})
        + unpaired_files(root / "gtFine" / split, "*/*_gtFine_labelIds.png",
                         {lb for _, lb in pairs}, label=True,
                         known=lambda p: p.name.endswith(COMPANIONS)))
    return FileSegmentation(f"cityscapes {split} {root}", pairs, protocol(num_classes),
                            "cityscapes", read_index_png, size, unpaired=unpaired, **kwargs)
