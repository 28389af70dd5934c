"""Class sets: names, colours and the ignore index shared by every dataset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255  # pixels with this label count in no loss and no metric


@dataclass(frozen=True)
class ClassSet:
    """An ordered list of classes; a label map holds indices into it (or IGNORE_INDEX)."""

    name: str
    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]  # RGB used to draw label maps

    def __post_init__(self):
        if len(self.names) != len(self.colors):
            raise ValueError(f"class set {self.name!r}: {len(self.names)} names but "
                             f"{len(self.colors)} colours")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"class {name!r} is not in class set {self.name!r}; "
                           f"expected one of {self.names}") from None


_CITYSCAPES_COLORS = {
    "road": (128, 64, 128), "sidewalk": (244, 35, 232), "building": (70, 70, 70),
    "wall": (102, 102, 156), "fence": (190, 153, 153), "pole": (153, 153, 153),
    "traffic light": (250, 170, 30), "traffic sign": (220, 220, 0),
    "vegetation": (107, 142, 35), "terrain": (152, 251, 152), "sky": (70, 130, 180),
    "person": (220, 20, 60), "rider": (255, 0, 0), "car": (0, 0, 142), "truck": (0, 0, 70),
    "bus": (0, 60, 100), "train": (0, 80, 100), "motorcycle": (0, 0, 230),
    "bicycle": (119, 11, 32),
}


def _class_set(name: str, names: tuple[str, ...]) -> ClassSet:
    return ClassSet(name, names, tuple(_CITYSCAPES_COLORS[n] for n in names))


# The embedded benchmark's ten classes, named and coloured as in Cityscapes. "fence" stands
# for wall/fence and "pole" for pole/sign, which are merged at 64x128 where signs are specks.
EMBEDDED = _class_set("embedded-10", (
    "road", "sidewalk", "building", "fence", "pole",
    "vegetation", "terrain", "sky", "person", "car",
))

CITYSCAPES_19 = _class_set("cityscapes-19", tuple(_CITYSCAPES_COLORS))


def colorize(label: np.ndarray, class_set: ClassSet) -> np.ndarray:
    """(H, W) label map -> (H, W, 3) uint8 RGB; ignored and unknown pixels are black."""
    palette = np.zeros((256, 3), np.uint8)
    palette[: class_set.num_classes] = np.asarray(class_set.colors, np.uint8)
    return palette[np.asarray(label, np.int64).clip(0, 255)]
