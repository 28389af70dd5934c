"""GTA5 (Richter et al. 2016): `images/*.png` and `labels/*.png`, labels in Cityscapes
labelIds stored as palette indices. Resized to 1280x720 for training, as in the paper.

A few GTA5 images and labels differ in size; they are left out and reported (see files.py).
Any other file in images/ or labels/ (a label without its image, a .jpg) is listed by
`check()`. GTA5 is a training-only source (its held-out source val draws learning curves
only), so a label file without its image is a warning naming the count and a few (an image
of another extension is named), not an error.

Trees prepared by DAFormer's or mmsegmentation's converters are read as they are: their
`labels/*_labelTrainIds.png` (COMPANIONS) are not reported, and the files they write at the
root (sample_class_stats.json, ...) lie outside the folders the reader reads.
"""

from __future__ import annotations

from pathlib import Path

from wsda_lib.data.classes import protocol
from wsda_lib.data.files import (
    DatasetError,
    FileSegmentation,
    labels_without_images,
    none_found,
    read_index_png,
    unpaired_files,
)

PAPER_SIZE = (1280, 720)  # (width, height)
# What DAFormer's and mmsegmentation's converters write beside each label: not reported.
COMPANIONS = ("_labelTrainIds.png",)


def _companion(path: Path) -> bool:
    return path.name.endswith(COMPANIONS)


def gta5(root: str | Path, size=PAPER_SIZE, num_classes: int = 19, **kwargs):
    """The GTA5 tree at root as a FileSegmentation; kwargs go to it (checking, ...).
    A label file without its image is a UserWarning (module docstring)."""
    root = Path(root)
    if not (root / "images").is_dir():
        raise DatasetError(f"{root}: no images/ folder; expected GTA5's images/*.png and "
                           f"labels/*.png")
    images = sorted((root / "images").glob("*.png"))
    if not images:
        raise none_found(f"gta5 {root}", root / "images", "*.png")
    pairs = [(p, root / "labels" / p.name) for p in images]
    paired = {lb for _, lb in pairs}

    def image_for(label: Path) -> Path:
        return root / "images" / label.name

    # Only the checker lists the files a reader does not read (a scan of both folders).
    unpaired = [] if not kwargs.get("checking") else (
        unpaired_files(root / "images", "*.png", set(images))
        + unpaired_files(root / "labels", "*.png", paired, label=True, known=_companion,
                         image_for=image_for))
    if not kwargs.get("checking"):
        labels_without_images(f"gta5 {root}", root / "labels", "*.png", paired, _companion,
                              image_for, evaluation=False)
    return FileSegmentation(f"gta5 {root}", pairs, protocol(num_classes), "cityscapes",
                            read_index_png, size, unpaired=unpaired, **kwargs)
