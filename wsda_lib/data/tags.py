"""Weak labels as a WDA user has them (docs/method.md §4): image-level labels and clicked
points read from CSV files, for target training images that need no pixel labels at all
(data.dataset = "folders"; data.image_labels, data.points).

    image,class[,class...]     data.image_labels: one row per image, the classes present in
                               it ("image" alone: none is); every training image has a row
    image,class,x,y            data.points: one row per click, x the pixel's column and y its
                               row (0-based) in the image file as stored; at most one click
                               per class and image

`image` is the file name relative to img_dir/train (or the name without its extension, or
without data.img_suffix), `class` a name from the class file. Files are UTF-8 (Excel's "CSV
UTF-8" too); empty lines and lines starting with "#" are skipped, and so is a header: the
first other row, when its first cell is "image". Every mistake is an error (ValueError)
naming the file, the line and the field that names the file: an unknown or ambiguous image,
an unknown class, a row given twice, an image without a row, a point outside its image, two
clicks of one class, a click on a class the image-level labels say is absent.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def _rows(path: Path, field: str, names):
    """(line number, cells) of the CSV at `path` (UTF-8, with or without Excel's byte order
    mark), without blank and comment lines, and without a header: the first other row, when
    its first cell is "image" and no image is called so."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ValueError(f"{field}={str(path)!r}: no such file") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} ({field}): not UTF-8 text ({e}); save it as UTF-8 CSV") \
            from None
    first = True
    for number, cells in enumerate(csv.reader(text.splitlines()), 1):
        cells = [c.strip() for c in cells]
        if not cells or not cells[0] or cells[0].startswith("#"):
            continue
        other = next((s for s in (";", "\t") if len(cells) == 1 and s in cells[0]), None)
        if other:  # Excel saves ';'-separated CSV in decimal-comma locales
            name = "tab" if other == "\t" else repr(other)
            raise ValueError(f"{path}:{number} ({field}): one cell holding {other!r}; the file "
                             f"looks {name}-separated, and "
                             f"wsda reads comma-separated CSV: save it with ',' between "
                             f"the cells")
        header = first and cells[0].lower() == "image" and "image" not in names.images
        first = False
        if not header:
            yield number, cells


class _Names:
    """Image and class names to their indices, with errors that name the file and line.
    images: file names, or (path, base) pairs as data.folders.folder_images gives them; an
    image is named by its file name (relative to the split's folder) or by its base (the
    name without its extension, or without data.img_suffix); a name two images share is
    refused as ambiguous when used."""

    def __init__(self, path, field, images, classes):
        self.path, self.field, self.classes = Path(path), field, list(classes)
        self.images, self.shown = {}, []
        for i, image in enumerate(images):
            if isinstance(image, str):
                keys = (image, str(Path(image).with_suffix("")))
            else:
                file, base = image
                keys = (base + file.name[len(base.rsplit("/", 1)[-1]):], base)
            self.shown.append(keys[0])
            for key in keys:
                self.images.setdefault(key, set()).add(i)

    def where(self, line: int) -> str:
        return f"{self.path}:{line} ({self.field})"

    def image(self, name: str, line: int) -> int:
        if name not in self.images:
            raise ValueError(f"{self.where(line)}: image {name!r} is not in the split's "
                             f"folder (img_dir/train); expected a file name such as "
                             f"{self.shown[0]!r}")
        if len(self.images[name]) > 1:
            raise ValueError(f"{self.where(line)}: image {name!r} is ambiguous: "
                             f"{sorted(self.shown[i] for i in self.images[name])}; give the "
                             f"file name")
        return next(iter(self.images[name]))

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
    for line, cells in _rows(path, field, names):
        i = names.image(cells[0], line)
        if i in seen:
            raise ValueError(f"{names.where(line)}: image {cells[0]!r} has a row already "
                             f"(line {seen[i]}); give each image one row")
        seen[i] = line
        for cls in cells[1:]:
            if cls:
                labels[i, names.klass(cls, line)] = 1
    missing = [name for i, name in enumerate(names.shown) if i not in seen]
    if missing:
        raise ValueError(f"{path} ({field}): {len(missing)} image(s) of the split have no "
                         f"row, e.g. {missing[:3]}; give every image a row (the image alone "
                         f"when no class is present)")
    return labels


def read_points(path, images, classes, sizes, out_size=None, present=None,
                field: str = "data.points") -> np.ndarray:
    """(N, C) int64 clicked points of the N images named `images`: the flat index y·W + x of
    each class's click in the image as it is trained on (out_size (W, H), or else the file's
    own size; the pixel whose centre is nearest the click's centre), −1 where a class has no
    click (method.point_supervision's format). sizes: the (W, H) of each image file, which
    the CSV's x, y are in. present (N, C): the image-level labels, when given; a click on a
    class they say is absent is refused. ValueError names the file, line and field (module
    docstring)."""
    names = _Names(path, field, images, classes)
    points = np.full((len(images), len(names.classes)), -1, np.int64)
    seen = {}
    for line, cells in _rows(path, field, names):
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
        if present is not None and not present[i, k]:
            raise ValueError(f"{names.where(line)}: a {cells[1]!r} point in {cells[0]!r}, "
                             f"which data.image_labels says does not contain {cells[1]!r}")
        seen[i, k] = line
        out_w, out_h = out_size or (width, height)
        row, column = (2 * y + 1) * out_h // (2 * height), (2 * x + 1) * out_w // (2 * width)
        points[i, k] = row * out_w + column
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
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
