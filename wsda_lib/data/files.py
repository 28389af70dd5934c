"""Image/label-file datasets: the shared part of the GTA5, SYNTHIA and Cityscapes readers.

A `FileSegmentation` is a list of (image path, label path) pairs, a class protocol, and a
function that reads a label file into raw ids. It follows the split protocol of splits.py,
like the embedded benchmark.

Problems are found before training starts where that is cheap: missing label files and empty
splits at construction, image/label size mismatches from the PNG headers (mismatched pairs are
left out and reported, so an epoch never crashes half-way). `check()` reads every file and
reports every problem by file name; `wsda data check` prints that report.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .classes import Protocol
from .splits import Split


class DatasetError(ValueError):
    """A problem with a dataset tree; the message names the file(s)."""


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; errors name the file."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))  # writable, as torch wants
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DatasetError(f"{path}: unreadable image ({e})") from None


def read_index_png(path: Path) -> np.ndarray:
    """Label ids stored as the *values* of a single-channel or palette PNG (GTA5, Cityscapes).

    A palette image is read as its indices, never its colours: converting to RGB first is a
    known source of wrong ids. An RGB label file is refused.
    """
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                raise DatasetError(f"{path}: label image has mode {im.mode}; expected label ids "
                                   f"in a palette ('P') or single-channel image, not colours")
            return np.asarray(im).astype(np.int64)
    except FileNotFoundError:
        raise DatasetError(f"{path}: label file is missing") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DatasetError(f"{path}: unreadable label image ({e})") from None


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DatasetError(f"{path}: unreadable image ({e})") from None


@dataclass
class Report:
    """What `check()` found: problem kind -> file names."""

    checked: int = 0
    problems: dict = field(default_factory=dict)

    def add(self, kind: str, message: str):
        self.problems.setdefault(kind, []).append(message)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self):
        lines = [f"checked {self.checked} image/label pairs: "
                 + ("no problems" if self.ok else
                    f"{sum(len(v) for v in self.problems.values())} problem(s)")]
        for kind, messages in self.problems.items():
            lines.append(f"  {kind}: {len(messages)}")
            lines += [f"    {m}" for m in messages[:5]]
            if len(messages) > 5:
                lines.append(f"    ... and {len(messages) - 5} more")
        return "\n".join(lines)


class FileSegmentation(Split):
    def __init__(self, name: str, pairs: list[tuple[Path, Path]], protocol: Protocol,
                 id_source: str, read_label: Callable[[Path], np.ndarray],
                 size: tuple[int, int] | None = None, resize_labels: bool = True,
                 check_sizes: bool = True,
                 typical_area: np.ndarray | None = None, weak_label_fraction: float = 0.1):
        """pairs: (image, label) paths; id_source: "cityscapes" or "synthia" ids;
        size: (width, height) to resize images to, and labels too (nearest neighbour) unless
        resize_labels=False: evaluation keeps full-resolution labels and upsamples the logits
        to them (the paper evaluates at 2048x1024). typical_area (C,) shares of the image and
        weak_label_fraction decide the image-level labels (splits.Split); without
        typical_area the split can be read and checked but has no image-level labels."""
        if not pairs:
            raise DatasetError(f"{name}: the split is empty (no image/label pairs found)")
        missing = [str(lb) for _, lb in pairs if not lb.is_file()]
        if missing:
            raise DatasetError(f"{name}: {len(missing)} label file(s) missing, e.g. "
                               f"{missing[:3]}")
        self.mismatched = []
        if check_sizes:
            kept = []
            for im, lb in pairs:
                if image_size(im) == image_size(lb):
                    kept.append((im, lb))
                else:
                    self.mismatched.append(f"{im.name}: image {image_size(im)} vs label "
                                           f"{image_size(lb)}")
            if self.mismatched:
                warnings.warn(f"{name}: left out {len(self.mismatched)} pair(s) whose image "
                              f"and label sizes differ, e.g. {self.mismatched[:3]}",
                              stacklevel=2)
            if not kept:
                raise DatasetError(f"{name}: no pair with matching image and label sizes")
            pairs = kept
        self.name, self.pairs, self.protocol = name, pairs, protocol
        self.class_set = protocol.class_set
        self.id_source, self.read_label = id_source, read_label
        self.size = tuple(size) if size else None  # a config read back from JSON has lists
        self.resize_labels = resize_labels
        self.typical_area = None if typical_area is None else np.asarray(typical_area)
        self.weak_label_fraction = weak_label_fraction

    def __len__(self):
        return len(self.pairs)

    def item_name(self, i: int) -> str:
        return self.pairs[i][0].name

    def label(self, i: int) -> np.ndarray:
        """The (H, W) uint8 label of item i in protocol classes, resized like load(); reads
        the label file only."""
        label_path = self.pairs[i][1]
        label = self.protocol.map_label_ids(self.read_label(label_path), self.id_source,
                                            str(label_path))
        if self.size and self.resize_labels:
            label = np.asarray(Image.fromarray(label).resize(self.size, Image.NEAREST))
        return label

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (H, W, 3) uint8 and label (H, W) uint8 of protocol classes, resized."""
        image_path, label_path = self.pairs[i]
        image = read_image(image_path)
        label = self.protocol.map_label_ids(self.read_label(label_path), self.id_source,
                                            str(label_path))
        if image.shape[:2] != label.shape:
            raise DatasetError(f"{image_path}: image {image.shape[:2]} and label "
                               f"{label.shape} sizes differ")
        if self.size:
            image = np.array(Image.fromarray(image).resize(self.size, Image.BILINEAR))
            if self.resize_labels:
                label = np.asarray(Image.fromarray(label).resize(self.size, Image.NEAREST))
        return image, label

    def check(self) -> Report:
        """Read every pair; report unreadable files, unknown ids and size mismatches."""
        report = Report()
        for m in self.mismatched:
            report.add("image/label size mismatch", m)
        for i in range(len(self)):
            report.checked += 1
            try:
                self.load(i)
            except ValueError as e:  # DatasetError, and unknown ids from the protocol
                kind = ("unknown label ids" if "unknown" in str(e) else
                        "16-bit label read as 8-bit" if "16-bit" in str(e) else
                        "size mismatch" if "sizes differ" in str(e) else "unreadable file")
                report.add(kind, str(e))
        report.checked += len(self.mismatched)
        return report
