"""Source images translated into the target's style offline (the paper used CycleGAN).

`TranslatedSource(split, folder)` yields the split's items with one more key, "translated":
the image `<folder>/<item name's stem>.png`, resized to the original's size. The adaptation
loop then trains on it instead of the original with probability `adapt.fda_prob`, beside the
originals, in place of the FDA stand-in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.functional import to_tensor

from wsda_lib.data.files import DatasetError, read_image


class TranslatedSource(torch.utils.data.Dataset):
    def __init__(self, split, folder: str | Path):
        self.split, self.folder = split, Path(folder)
        if not self.folder.is_dir():
            raise DatasetError(f"{self.folder}: no such folder of translated source images")
        first = self._path(0)
        if not first.is_file():
            raise DatasetError(f"{first}: translated image missing (expected one PNG per "
                               f"source image, named like the source image)")

    def _path(self, i: int) -> Path:
        return self.folder / f"{Path(self.split.item_name(i)).stem}.png"

    def check(self) -> None:
        """Every source image has its translated PNG, an 8-bit colour image (its header read,
        as files.read_image checks); the error names the missing or unsupported files.
        Checked before training, so that a bad file does not stop a run half-way."""
        missing = [self._path(i) for i in range(len(self.split)) if not self._path(i).is_file()]
        if missing:
            raise DatasetError(f"{self.folder}: {len(missing)} of {len(self.split)} translated "
                               f"source images missing, e.g. {[str(p) for p in missing[:3]]} "
                               f"(expected one PNG per source image, named like it)")
        for i in range(len(self.split)):  # formats from the headers (16-bit, grey, ...)
            read_image(self._path(i), decode=False)

    def __len__(self):
        return len(self.split)

    def __getattr__(self, name):  # name, class_set, ... of the wrapped split
        if name == "split":
            raise AttributeError(name)
        return getattr(self.split, name)

    def __getitem__(self, i):
        item = self.split[i]
        image = read_image(self._path(i))
        h, w = item["image"].shape[-2:]
        if image.shape[:2] != (h, w):
            image = np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        item["translated"] = to_tensor(image)
        return item
