"""SYNTHIA-RAND-CITYSCAPES (Ros et al. 2016): `RGB/*.png` and `GT/LABELS/*.png`.

The label files are 16-bit PNGs whose first (red) channel holds the SYNTHIA class id. Pillow
would truncate them to 8 bits, so they are read with OpenCV (IMREAD_UNCHANGED), and a label
file that is not 16-bit is refused: it has been converted somewhere and its ids are wrong.
Evaluated on 16 or 13 classes.

SYNTHIA is a training-only source, so a label file without its image is a warning naming the
count and a few (an image of another extension is named), not an error. Trees prepared by
DAFormer's or mmsegmentation's converters are read as they are: their
`GT/LABELS/*_labelTrainIds.png` (COMPANIONS) are not reported, and the files they write at the
root (sample_class_stats.json, ...) lie outside the folders the reader reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsda_lib.data.classes import protocol
from wsda_lib.data.files import (
    UNREADABLE_LABEL,
    UNSUPPORTED_LABEL,
    DatasetError,
    FileSegmentation,
    labels_without_images,
    none_found,
    unpaired_files,
)

PAPER_SIZE = (1280, 760)  # (width, height): SYNTHIA-RAND-CITYSCAPES is kept at its own size
# What DAFormer's and mmsegmentation's converters write beside each label: not reported.
COMPANIONS = ("_labelTrainIds.png",)


def _companion(path: Path) -> bool:
    return path.name.endswith(COMPANIONS)


def read_synthia_label(path: Path) -> np.ndarray:
    """The class ids (H, W) from the red channel of a 16-bit SYNTHIA label PNG."""
    try:
        import cv2
    except ImportError:
        raise DatasetError("reading SYNTHIA labels needs OpenCV, which keeps their 16 bits: "
                           "pip install 'wsda[paper]'") from None
    if not Path(path).is_file():
        raise DatasetError(f"{path}: label file is missing")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DatasetError(f"{path}: unreadable label file", UNREADABLE_LABEL)
    if raw.dtype != np.uint16:
        raise DatasetError(f"{path}: expected a 16-bit SYNTHIA label PNG, got {raw.dtype} "
                           f"(a 16-bit label read or saved as 8-bit has wrong ids)",
                           "16-bit label read as 8-bit")
    if raw.ndim == 3 and raw.shape[2] not in (3, 4):
        raise DatasetError(f"{path}: unsupported label format ({raw.shape[2]} channels); "
                           f"expected SYNTHIA's 3-channel 16-bit label PNG", UNSUPPORTED_LABEL)
    return (raw[..., 2] if raw.ndim == 3 else raw).astype(np.int64)  # OpenCV is BGR: red = 2


def synthia(root: str | Path, size=PAPER_SIZE, num_classes: int = 16, **kwargs):
    """The SYNTHIA tree at root as a FileSegmentation; kwargs go to it (checking, ...).
    Other files in RGB/ and GT/LABELS/ are listed by `check()`; GT/COLOR/ is not read. A
    label file without its image is a UserWarning (module docstring)."""
    if num_classes not in (16, 13):
        raise ValueError(f"data.class_protocol={num_classes!r}: SYNTHIA is evaluated on 16 or "
                         f"13 classes")
    root = Path(root)
    if not (root / "RGB").is_dir():
        raise DatasetError(f"{root}: no RGB/ folder; expected SYNTHIA's RGB/*.png and "
                           f"GT/LABELS/*.png")
    images = sorted((root / "RGB").glob("*.png"))
    if not images:
        raise none_found(f"synthia {root}", root / "RGB", "*.png")
    labels = root / "GT" / "LABELS"
    pairs = [(p, labels / p.name) for p in images]
    paired = {lb for _, lb in pairs}

    def image_for(label: Path) -> Path:
        return root / "RGB" / label.name

    # Only the checker lists the files a reader does not read (a scan of both folders).
    unpaired = [] if not kwargs.get("checking") else (
        unpaired_files(root / "RGB", "*.png", set(images))
        + unpaired_files(labels, "*.png", paired, label=True, known=_companion,
                         image_for=image_for))
    if not kwargs.get("checking"):
        labels_without_images(f"synthia {root}", labels, "*.png", paired, _companion,
                              image_for, evaluation=False)
    return FileSegmentation(f"synthia {root}", pairs, protocol(num_classes), "synthia",
                            read_synthia_label, size, unpaired=unpaired, **kwargs)
