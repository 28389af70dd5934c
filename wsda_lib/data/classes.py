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


IGNORE_COLOR = (255, 255, 255)  # white: no class colour is near it (building is dark grey)


def colorize(label: np.ndarray, class_set: ClassSet) -> np.ndarray:
    """(H, W) label map -> (H, W, 3) uint8 RGB; ignored (255) and unknown pixels are
    IGNORE_COLOR."""
    palette = np.full((256, 3), IGNORE_COLOR, np.uint8)
    palette[: class_set.num_classes] = np.asarray(class_set.colors, np.uint8)
    return palette[np.asarray(label, np.int64).clip(0, 255)]


# ---------------------------------------------------------------------------------------------
# Class protocols of the real datasets (docs/method.md §10): one table, vectorised lookups.

# Cityscapes labelId -> trainId (GTA5 label PNGs use the same ids).
CITYSCAPES_LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8,
                             22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16,
                             32: 17, 33: 18}
# SYNTHIA class id (red channel of the 16-bit label PNG) -> Cityscapes trainId.
SYNTHIA_TO_TRAIN = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10,
                    10: 11, 17: 12, 8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18}
# Cityscapes label ids that exist but are not evaluated (void, ego vehicle, ...): -> 255.
CITYSCAPES_IGNORED_LABEL_IDS = tuple(sorted(set(range(-1, 34)) - set(CITYSCAPES_LABEL_TO_TRAIN)))
# SYNTHIA ids that exist but have no Cityscapes class (void, lanemarking, ...): -> 255.
SYNTHIA_IGNORED_IDS = (0, 13, 14, 22)

_DROP = {
    19: (),
    16: ("terrain", "truck", "train"),
    13: ("terrain", "truck", "train", "wall", "fence", "pole"),
}


@dataclass(frozen=True)
class Protocol:
    """An evaluation protocol: which Cityscapes classes count, and how raw ids map to them."""

    class_set: ClassSet
    train_to_protocol: np.ndarray   # (256,) Cityscapes trainId (or 255) -> protocol index

    def to_label_ids(self, prediction: np.ndarray) -> np.ndarray:
        """Protocol class indices -> Cityscapes labelIds (uint8), for the official scripts;
        255 stays 0 ("unlabeled")."""
        lut = np.zeros(256, np.uint8)
        train_to_label = {t: lid for lid, t in CITYSCAPES_LABEL_TO_TRAIN.items()}
        for i, name in enumerate(self.class_set.names):
            lut[i] = train_to_label[CITYSCAPES_19.index(name)]
        return lut[np.asarray(prediction, np.int64).clip(0, 255)]

    def map_label_ids(self, ids: np.ndarray, source: str, name: str = "label") -> np.ndarray:
        """Raw ids -> protocol class indices (uint8; 255 = ignore) with one table lookup.

        source: "cityscapes" (Cityscapes/GTA5 labelIds) or "synthia" (SYNTHIA ids). Ids the
        dataset does not define raise an error that names `name` and the ids.
        """
        table, known = _RAW_TABLES[source]
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise ValueError(f"{name}: label ids must be integers, got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= len(table) or
                         not known[ids.clip(0, len(table) - 1)].all()):
            bad = np.unique(ids[(ids < 0) | (ids >= len(table)) |
                                ~known[ids.clip(0, len(table) - 1)]])
            raise ValueError(f"{name}: unknown {source} label ids {bad[:10].tolist()}; "
                             f"expected {source} ids (see docs/method.md §10)"
                             + _train_id_hint(ids, source))
        return self.train_to_protocol[table[ids]]

    def outside(self, ids: np.ndarray, source: str) -> np.ndarray:
        """(H, W) bool: pixels whose raw id is a Cityscapes-19 class that this protocol drops
        (terrain, truck, train for 16 classes; also wall, fence, pole for 13). They are void
        (255) in map_label_ids; the official Cityscapes evaluation instead scores them as
        ground truth of a class outside the protocol (evaluate.py, convention="official").
        Call after map_label_ids, which checks the ids."""
        table, _ = _RAW_TABLES[source]
        train = table[np.asarray(ids).clip(0, len(table) - 1)]
        return (train != IGNORE_INDEX) & (self.train_to_protocol[train] == IGNORE_INDEX)


def _train_id_hint(ids: np.ndarray, source: str) -> str:
    """What to say when a Cityscapes/GTA5 labelIds file holds only trainIds (0-18 and 255):
    a *_labelTrainIds.png (from cityscapesscripts or a converter) saved under the labelIds
    name, whose ids would otherwise be read as other classes."""
    values = np.unique(ids)
    if source == "cityscapes" and 255 in values and (values[values != 255] <= 18).all():
        return ("; its values are all 0-18 and 255, as trainIds are: this looks like a "
                "*_labelTrainIds.png under the labelIds name; the readers take labelIds (0-33)")
    return ""


def _raw_table(mapping: dict, ignored, size: int = 65536):
    table = np.full(size, IGNORE_INDEX, np.uint8)
    known = np.zeros(size, bool)
    for raw, train in mapping.items():
        table[raw], known[raw] = train, True
    for raw in ignored:
        if raw >= 0:
            known[raw] = True
    return table, known


_RAW_TABLES = {
    "cityscapes": _raw_table(CITYSCAPES_LABEL_TO_TRAIN, CITYSCAPES_IGNORED_LABEL_IDS, 256),
    # SYNTHIA ids beyond 22 do not exist; ids are read from 16-bit files, hence the size.
    "synthia": _raw_table(SYNTHIA_TO_TRAIN, SYNTHIA_IGNORED_IDS, 65536),
}


def protocol(num_classes: int) -> Protocol:
    """The 19-, 16- or 13-class protocol (SYNTHIA drops 3, then 6 of Cityscapes' classes)."""
    if num_classes not in _DROP:
        raise ValueError(f"num_classes must be 19, 16 or 13, got {num_classes}")
    names = tuple(n for n in CITYSCAPES_19.names if n not in _DROP[num_classes])
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    for i, n in enumerate(names):
        lut[CITYSCAPES_19.index(n)] = i
    return Protocol(_class_set(f"cityscapes-{num_classes}", names), lut)
