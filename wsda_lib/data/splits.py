"""The one split protocol that every dataset here follows, and the `Benchmark` of five splits.

A split is a `torch.utils.data.Dataset` of image/label pairs with one class set. Item i is

    {"image": (3, H, W) float32 in [0, 1], "label": (H, W) int64 (255 = ignore),
     "name": str, "index": i, "weak_label": (C,) float32 0/1 image-level labels}

and, without decoding any image, `label(i)` gives the (H, W) uint8 label map, `weak_label(i)`
the (C,) image-level label and `weak_labels` the (N, C) labels of the whole split. The
embedded benchmark (`InMemorySplit`, below) and the real-data readers (`files.py`) are both
`Split`s; training, evaluation and analysis use nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.functional import to_tensor

from wsda_lib.data.classes import ClassSet
from wsda_lib.data.weak_labels import class_pixel_counts, image_labels

SPLIT_NAMES = ("source_train", "source_val", "target_train", "target_val", "target_test")


class Split(Dataset):
    """Base of every split. Subclasses set `name` and `class_set` and implement `__len__`,
    `load(i)` -> (image (H, W, 3) uint8, label (H, W) uint8), `label(i)` and `item_name(i)`.

    Image-level labels follow the paper's rule (docs/method.md §4): class c is present when
    it covers more than `weak_label_fraction` of its typical area `typical_area[c]` (a share
    of the image, measured on source_train; weak_labels.typical_areas). Both are given at
    construction; a split built without them (a reader used only to check files) refuses to
    make weak labels instead of guessing.
    """

    name: str
    class_set: ClassSet
    typical_area: np.ndarray | None = None
    weak_label_fraction: float = 0.1
    # Image-level labels given as they are (N, C), e.g. read from a CSV (tags.py): they replace
    # the rule above. Points (N, C) given as they are: flat indices at the training size.
    tags: np.ndarray | None = None
    points: np.ndarray | None = None
    has_pixel_labels = True  # False: label(i) is all ignore (target train without labels)

    @property
    def has_image_labels(self) -> bool:
        """Whether items carry "weak_label": given tags, or the rule's typical areas."""
        return self.tags is not None or self.typical_area is not None

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def label(self, i: int) -> np.ndarray:
        """The (H, W) uint8 label map of item i (255 = ignore)."""
        return self.load(i)[1]

    def item_name(self, i: int) -> str:
        raise NotImplementedError

    def weak_label(self, i: int) -> np.ndarray:
        """(C,) float32 image-level label of item i (reads its label only)."""
        return self._weak_label(i, self.label(i))

    def _weak_label(self, i: int, label: np.ndarray) -> np.ndarray:
        if self.tags is not None:
            return self.tags[i]
        if self.typical_area is None:
            raise ValueError(f"split {self.name!r} was built without typical_area, so it has "
                             f"no image-level labels; open it with wsda_lib.data.load")
        counts = class_pixel_counts(label[None], self.class_set.num_classes)
        return image_labels(counts, self.typical_area, self.weak_label_fraction, label.size)[0]

    @property
    def weak_labels(self) -> np.ndarray:
        """(N, C) float32 image-level labels of the whole split (read once, then kept)."""
        if self.tags is not None:
            return self.tags
        if getattr(self, "_weak_labels", None) is None:
            self._weak_labels = np.stack([self.weak_label(i) for i in range(len(self))])
        return self._weak_labels

    def labels_array(self) -> np.ndarray:
        """(N, H, W) uint8: every label map of the split, for what needs them all at once
        (the datasheet, pseudo_label_maps on a few images); training never calls it, so a
        real split need not fit. Needs labels of one size."""
        return np.stack([self.label(i) for i in range(len(self))])

    def __getitem__(self, i: int) -> dict:
        image, label = self.load(i)
        item = {"image": to_tensor(image), "label": torch.from_numpy(label.astype(np.int64)),
                "name": self.item_name(i), "index": i}
        if self.has_image_labels:  # a reader opened only to read files has none
            item["weak_label"] = torch.from_numpy(self._weak_label(i, label))
        return item


class InMemorySplit(Split):
    """Images (N, H, W, 3) uint8 and labels (N, H, W) uint8 held in memory; the image-level
    labels are computed once, at construction."""

    def __init__(self, name: str, images: np.ndarray, labels: np.ndarray, class_set: ClassSet,
                 typical_area: np.ndarray, weak_label_fraction: float = 0.1):
        if images.shape[:3] != labels.shape or images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"split {name!r}: images {images.shape} and labels {labels.shape} "
                             f"do not match; expected (N, H, W, 3) and (N, H, W)")
        self.name, self.images, self.labels = name, images, labels
        self.class_set = class_set
        self.typical_area = np.asarray(typical_area)
        self.weak_label_fraction = weak_label_fraction
        counts = class_pixel_counts(labels, class_set.num_classes)
        self._weak_labels = image_labels(counts, self.typical_area, weak_label_fraction,
                                         labels[0].size)

    def __len__(self):
        return len(self.images)

    def load(self, i):
        return self.images[i], self.labels[i]

    def label(self, i):
        return self.labels[i]

    def labels_array(self):
        return self.labels

    def _weak_label(self, i, label):
        return self._weak_labels[i]

    def item_name(self, i):
        return f"{self.name}/{i:05d}"


class WithItems(Dataset):
    """A split whose items carry more per-image values: WithItems(split, points=(N, C) array)
    adds item["points"] = torch.as_tensor(points[i]). A value may also be any sequence with
    one entry per image, read as items are (LabelFiles), or a function of the item, called
    as each item is read (method.point_supervision.ItemPoints). Everything else is the
    wrapped split's (its name, class set, labels). Used for the clicked points of WDA and the
    pixel pseudo labels of self-training, which belong to target images as their labels do."""

    def __init__(self, split, **values):
        for key, v in values.items():
            if not callable(v) and len(v) != len(split):
                raise ValueError(f"{key}: {len(v)} entries for split {split.name!r} of "
                                 f"{len(split)} images; expected one per image")
        self.split, self.arrays = split, values

    def __len__(self):
        return len(self.split)

    def __getattr__(self, name):  # name, class_set, label(), weak_labels of the wrapped split
        if name in ("split", "arrays"):
            raise AttributeError(name)
        return getattr(self.split, name)

    def __getitem__(self, i):
        item = self.split[i]
        item.update({k: torch.as_tensor(v(item) if callable(v) else v[i])
                     for k, v in self.arrays.items()})
        return item


class LabelFiles:
    """Label maps stored one 8-bit PNG per image, read when asked: files[i] is the (H, W)
    uint8 map in `path(i)`; len(files) = n. Self-training's pseudo labels
    (training.pseudo_labels.write_pseudo_labels) go through WithItems this way."""

    def __init__(self, n: int, path):
        self.n, self.path = n, path

    def __len__(self):
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < self.n:
            raise IndexError(i)
        path = Path(self.path(i))
        try:
            with Image.open(path) as im:
                return np.array(im)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: label file is missing") from None


@dataclass
class Benchmark:
    """The five splits of an experiment (SPLIT_NAMES), their class set and the typical class
    areas (C,), as shares of the image, that decide their image-level labels."""

    splits: dict[str, Split]
    class_set: ClassSet
    typical_area: np.ndarray
    cache_dir: Path
    fingerprint: str | None = None  # the embedded benchmark's (synthetic.fingerprint)

    def __getitem__(self, split: str) -> Split:
        if split not in self.splits:
            raise KeyError(f"no split {split!r}; expected one of {sorted(self.splits)}")
        return self.splits[split]
