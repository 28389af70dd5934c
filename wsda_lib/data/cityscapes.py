"""Cityscapes (Cordts et al. 2016): `leftImg8bit/{split}/<city>/*_leftImg8bit.png` and
`gtFine/{split}/<city>/*_gtFine_labelIds.png`, labelIds mapped to trainIds.

Training resizes to 1024x512 as in the paper; evaluation keeps the labels at 2048x1024 and
upsamples the logits to them (see evaluate.py): `cityscapes(root, "val")` does so by default.
Both splits are scored (val, and the last images of train as target val), so every label file
of a split must have its image: a labelIds file without one is an error naming it, never a
score on fewer images.
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

PAPER_SIZE = (1024, 512)  # (width, height) of training inputs
IMAGE_SUFFIX, LABEL_SUFFIX = "_leftImg8bit.png", "_gtFine_labelIds.png"
# Files Cityscapes ships next to the labelIds that the reader does not need: not reported.
COMPANIONS = ("_gtFine_color.png", "_gtFine_instanceIds.png", "_gtFine_labelTrainIds.png",
              "_gtFine_polygons.json")
# Splits that are scored: val (the paper's evaluation set) and train (target val is its end).
SCORED_SPLITS = ("train", "val")
# The paper's evaluation protocol (docs/method.md §10), the defaults of split "val": native
# labels (the logits are upsampled to them), and a size-mismatched pair is an error.
EVALUATION_DEFAULTS = {"resize_labels": False, "on_size_mismatch": "refuse"}


def _companion(path: Path) -> bool:
    return path.name.endswith(COMPANIONS)


def cityscapes(root: str | Path, split: str = "train", size=PAPER_SIZE, num_classes: int = 19,
               **kwargs):
    """Cityscapes `split` ("train" or "val") at root as a FileSegmentation; kwargs go to it
    (resize_labels, checking, ...). size: (width, height) the images are resized to.

    "val" follows the paper's evaluation protocol unless kwargs say otherwise
    (EVALUATION_DEFAULTS): labels at their native resolution, 2048x1024, to which evaluate()
    upsamples the logits, and an image/label size mismatch refused by name. "train" resizes
    labels with the images (training).

    A labelIds file without its image (`<stem>_leftImg8bit.png`, e.g. a `.jpg` image: the
    error says "found X.jpg; expected a PNG") is a DatasetError naming it for "train" and
    "val", whose labels are scored; a warning for another split. Other files under
    leftImg8bit/{split}/ and gtFine/{split}/ (a stray file) are listed by `check()`
    (checking=True, `wsda data check`), as are labels without their image; the companion
    files in COMPANIONS are not."""
    root = Path(root)
    images, labels = root / "leftImg8bit" / split, root / "gtFine" / split
    if not images.is_dir():
        raise DatasetError(f"{root}: no leftImg8bit/{split}/ folder; expected Cityscapes' "
                           f"leftImg8bit/{{train,val}}/<city>/*_leftImg8bit.png")
    pairs = []
    for p in sorted(images.glob(f"*/*{IMAGE_SUFFIX}")):
        stem = p.name[: -len(IMAGE_SUFFIX)]
        pairs.append((p, labels / p.parent.name / f"{stem}{LABEL_SUFFIX}"))
    if not pairs:
        raise none_found(f"cityscapes {split} {root}", images, f"*/*{IMAGE_SUFFIX}")

    def image_for(label: Path) -> Path:
        return images / label.parent.name / f"{label.name[: -len(LABEL_SUFFIX)]}{IMAGE_SUFFIX}"

    name = f"cityscapes {split} {root}"
    paired = {lb for _, lb in pairs}
    if kwargs.get("checking"):  # the checker lists what a reader does not read (both folders)
        unpaired = (unpaired_files(images, f"*/*{IMAGE_SUFFIX}", {im for im, _ in pairs})
                    + unpaired_files(labels, f"*/*{LABEL_SUFFIX}", paired, label=True,
                                     known=_companion, image_for=image_for))
    else:
        unpaired = []
        labels_without_images(name, labels, f"*/*{LABEL_SUFFIX}", paired, _companion,
                              image_for, evaluation=split in SCORED_SPLITS)
    if split == "val":
        kwargs = {**EVALUATION_DEFAULTS, **kwargs}
    return FileSegmentation(name, pairs, protocol(num_classes), "cityscapes", read_index_png,
                            size, unpaired=unpaired, **kwargs)
