"""Weak labels as a WDA user has them (docs/method.md §4): image-level labels and clicked
points read from CSV files, for target training images that need no pixel labels at all
(data.dataset = "folders"; data.image_labels, data.points).

    image,class[,class...]     data.image_labels: one row per image, the classes present in
                               it ("image" alone: none is); every training image has a row
    image,class,x,y            data.points: one row per click, x the pixel's column and y its
                               row (0-based) in the image file as stored; at most one click
                               per class and image

`image` is the file name in img_dir/train (or its stem), `class` a name from the class file.
A first row whose first cell is "image" is a header and skipped; so are empty lines and lines
starting with "#". Every mistake is an error (ValueError) naming the file, the line and the
field that names the file: an unknown image or class, a row given twice, an image without a
row, a point outside its image.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def _rows(path: Path, field: str):
    """(line number, cells) of the CSV at `path`, without header, blanks and comments."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ValueError(f"{field}={str(path)!r}: no such file") from None
    for number, cells in enumerate(csv.reader(text.splitlines()), 1):
        cells = [c.strip() for c in cells]
        if not cells or not cells[0] or cells[0].startswith("#"):
            continue
        if number == 1 and cells[0].lower() == "image":
            continue
        yield number, cells


class _Names:
    """Image and class names to their indices, with errors that name the file and line."""

    def __init__(self, path, field, images, classes):
        self.path, self.field, self.classes = Path(path), field, list(classes)
        self.images = {}
        for i, name in enumerate(images):
            self.images[name] = self.images[Path(name).stem] = i

    def where(self, line: int) -> str:
        return f"{self.path}:{line} ({self.field})"

    def image(self, name: str, line: int) -> int:
        if name not in self.images:
            raise ValueError(f"{self.where(line)}: image {name!r} is not in the split's "
                             f"folder (img_dir/train); expected a file name such as "
                             f"{next(iter(self.images))!r}")
        return self.images[name]

    def klass(self, name: str, line: int) -> int:
        if name not in self.classes:
            raise ValueError(f"{self.where(line)}: class {name!r} is not in the class file; "
                             f"expected one of {self.classes}")
        return self.classes.index(name)


def read_image_labels(path, images, classes, field: str = "data.image_labels") -> np.ndarray:
    """(N, C) float32 0/1 image-level labels of the N images named `images` (file names, in
    the split's order) over `classes` (C names), from the CSV at `path`. ValueError (module
    docstring) names the file, line and field, and the images without a row."""
    names = _Names(path, field, images, classes)
    labels = np.zeros((len(images), len(names.classes)), np.float32)
    seen = {}
    for line, cells in _rows(path, field):
        i = names.image(cells[0], line)
        if i in seen:
            raise ValueError(f"{names.where(line)}: image {cells[0]!r} has a row already "
                             f"(line {seen[i]}); give each image one row")
        seen[i] = line
        for cls in cells[1:]:
            if cls:
                labels[i, names.klass(cls, line)] = 1
    missing = [name for i, name in enumerate(images) if i not in seen]
    if missing:
        raise ValueError(f"{path} ({field}): {len(missing)} image(s) of the split have no "
                         f"row, e.g. {missing[:3]}; give every image a row (the image alone "
                         f"when no class is present)")
    return labels


def read_points(path, images, classes, sizes, out_size=None,
                field: str = "data.points") -> np.ndarray:
    """(N, C) int64 clicked points of the N images named `images`: the flat index y·W + x of
    each class's click in the image as it is trained on (out_size (W, H), or else the file's
    own size), −1 where a class has no click (method.point_supervision's format). sizes: the
    (W, H) of each image file, which the CSV's x, y are in. ValueError names the file, line
    and field (module docstring)."""
    names = _Names(path, field, images, classes)
    points = np.full((len(images), len(names.classes)), -1, np.int64)
    seen = {}
    for line, cells in _rows(path, field):
        if len(cells) != 4:
            raise ValueError(f"{names.where(line)}: {len(cells)} fields; expected "
                             f"image,class,x,y")
        i, k = names.image(cells[0], line), names.klass(cells[1], line)
        width, height = sizes[i]
        try:
            x, y = int(cells[2]), int(cells[3])
        except ValueError:
            raise ValueError(f"{names.where(line)}: x, y = {cells[2]!r}, {cells[3]!r}; "
                             f"expected whole pixel coordinates") from None
        if not (0 <= x < width and 0 <= y < height):
            raise ValueError(f"{names.where(line)}: point ({x}, {y}) is outside the image "
                             f"{cells[0]!r} of {width}x{height} px (x: column, y: row)")
        if (i, k) in seen:
            raise ValueError(f"{names.where(line)}: image {cells[0]!r} has a {cells[1]!r} "
                             f"point already (line {seen[i, k]}); give one per class")
        seen[i, k] = line
        out_w, out_h = out_size or (width, height)
        points[i, k] = (y * out_h // height) * out_w + x * out_w // width
    return points


def write_image_labels(path, images, labels, classes) -> None:
    """Write (N, C) 0/1 `labels` of the images named `images` as read_image_labels reads."""
    rows = [["image", "classes..."]]
    rows += [[name, *(classes[k] for k in np.flatnonzero(row))]
             for name, row in zip(images, labels, strict=True)]
    _write(path, rows)


def write_points(path, images, points, classes, width: int) -> None:
    """Write (N, C) flat `points` (−1: none) in images `width` px wide as read_points
    reads them."""
    rows = [["image", "class", "x", "y"]]
    rows += [[name, classes[k], int(p) % width, int(p) // width]
             for name, row in zip(images, points, strict=True)
             for k, p in enumerate(row) if p >= 0]
    _write(path, rows)


def _write(path, rows) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
