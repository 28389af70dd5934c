"""Image/label-file datasets: the shared part of the GTA5, SYNTHIA and Cityscapes readers.

A `FileSegmentation` is a list of (image path, label path) pairs, a class protocol, and a
function that reads a label file into raw ids. It follows the split protocol of splits.py,
like the embedded benchmark.

Problems are found before training starts where that is cheap: missing label files, unreadable
file headers and empty splits at construction, label files without their image (the readers,
`labels_without_images`: evaluation splits refuse them, training-only splits warn), image/label
size mismatches from the PNG headers (mismatched pairs are left out and reported, so an epoch
never crashes half-way; evaluation splits refuse them). `check()` reads every pair and reports
every problem by file name, under its kind: every file in the dataset's folders is either read
or reported with the reason;
`wsda data check` prints that report. Formats: images must be 8-bit colour (RGB, RGBA or
palette); GTA5/Cityscapes labels 8-bit ids ('P' or 'L'); anything else is refused by name
rather than converted.
"""

from __future__ import annotations

import glob
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.functional import to_tensor

from wsda_lib.data.classes import Protocol
from wsda_lib.data.splits import Split


class DatasetError(ValueError):
    """A problem with a dataset tree; the message names the file(s). `kind` says which
    problem it is, as `check()` lists it ("unreadable label file", ...), or None."""

    def __init__(self, message: str, kind: str | None = None):
        super().__init__(message)
        self.kind = kind


# What `check()` calls each problem (the keys of Report.problems).
IMAGE_WITHOUT_LABEL = "image without label file"
LABEL_WITHOUT_IMAGE = "label file without image"
NOT_READ = "file not read"
UNREADABLE_IMAGE = "unreadable image file"
UNREADABLE_LABEL = "unreadable label file"
UNSUPPORTED_IMAGE = "unsupported image format"
UNSUPPORTED_LABEL = "unsupported label format"
SIZE_MISMATCH = "image/label size mismatch"
MIXED_SIZES = "images of several sizes, none set to resize to"
UNKNOWN_IDS = "unknown label ids"

IMAGE_MODES = ("RGB", "RGBA", "P")  # 8-bit colour; alpha is dropped, a palette gives colours
LABEL_MODES = ("P", "L")            # 8-bit ids: palette indices or grey values


def png_bit_depth(path: Path) -> int | None:
    """Bits per channel from a PNG file's IHDR header (1, 2, 4, 8 or 16); None for a file
    that is not a PNG or too short to say. Pillow opens a 16-bit RGB PNG as 8-bit 'RGB'
    without a word, so the depth is read here."""
    with open(path, "rb") as f:
        head = f.read(25)
    if len(head) < 25 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24]


def too_large(path: Path, error: Exception, what: str) -> DatasetError:
    """The error for an image over Pillow's pixel limit (Image.MAX_IMAGE_PIXELS, a guard
    against decompression bombs), naming the file, its size and the limit. wsda does not
    raise the limit: training reads whole images, and one this large should be tiled or
    downscaled first."""
    found = re.search(r"\((\d+) pixels\)", str(error))  # Pillow names the pixel count
    size = f"{int(found.group(1)):,} pixels" if found else "its size unknown"
    with open(path, "rb") as f:  # a PNG's width and height, from its header
        head = f.read(24)
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        size = f"{int.from_bytes(head[16:20], 'big')}x{int.from_bytes(head[20:24], 'big')}, {size}"
    limit = Image.MAX_IMAGE_PIXELS
    kind = UNREADABLE_LABEL if what == "label" else UNREADABLE_IMAGE
    return DatasetError(f"{path}: {what} too large for Pillow's decompression-bomb limit "
                        f"({size}; the limit is {limit:,} pixels, twice that refused outright): "
                        f"tile or downscale it before training; the limit can be raised "
                        f"(PIL.Image.MAX_IMAGE_PIXELS) only for files you trust", kind)


def read_image(path: Path, decode: bool = True) -> np.ndarray | None:
    """(H, W, 3) uint8 RGB of an 8-bit colour image (mode RGB, RGBA or palette; alpha is
    dropped). Errors (DatasetError) name the file: a missing or unreadable (truncated) file,
    and any other format (16 bits per channel, grey, grey+alpha, CMYK, ...), which would be
    converted to colours that the datasets never have. decode=False checks the format from
    the file's header alone (the checks before training) and returns None."""
    try:
        with Image.open(path) as im:
            depth = png_bit_depth(path)
            if im.mode not in IMAGE_MODES or (depth is not None and depth > 8):
                bits = f", {depth} bits per channel" if depth else ""
                raise DatasetError(f"{path}: unsupported image format (mode {im.mode}{bits}); "
                                   f"expected an 8-bit RGB colour image", UNSUPPORTED_IMAGE)
            return np.array(im.convert("RGB")) if decode else None  # writable, as torch wants
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file is missing", "missing image file") from None
    except Image.DecompressionBombError as e:
        raise too_large(path, e, "image") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DatasetError(f"{path}: unreadable image ({e})", UNREADABLE_IMAGE) from None


# Formats whose compression changes pixel values: a label map saved so has other ids at
# edges (JPEG's ringing turns ids into other valid ids), whatever the file is called.
LOSSY_FORMATS = ("JPEG", "MPO", "JPEG2000", "WEBP")


def refuse_lossy_label(path: Path, im) -> None:
    """A DatasetError naming a label file whose content (not its name) is a lossy format."""
    if im.format in LOSSY_FORMATS:
        raise DatasetError(f"{path}: the label file holds {im.format} data, whatever its name: "
                           f"a lossy format, whose compression turns label ids into other "
                           f"ids; save the labels losslessly (PNG)", UNSUPPORTED_LABEL)


# Images with an EXIF orientation tag are read as stored, not as a viewer displays them:
# right when the labels follow the stored pixels (Cityscapes, GTA5), misaligned when they
# were drawn on the displayed image. `check()` names them.
ROTATED = ("EXIF orientation tag other than 1, read as stored (not as displayed): right if "
           "the labels follow the stored pixels, as Cityscapes' and GTA5's do; rotate the "
           "images first if the labels were drawn on the displayed image")


def exif_orientation(path: Path) -> int | None:
    """The EXIF orientation tag (1-8) of an image file, None without one or unreadable."""
    try:
        with Image.open(path) as im:
            return im.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - an unreadable file is reported by the reader itself
        return None


def read_index_png(path: Path) -> np.ndarray:
    """(H, W) int64 label ids stored as the *values* of an 8-bit palette ('P') or single-channel
    ('L') image (GTA5, Cityscapes).

    A palette image is read as its indices, never its colours: converting to RGB first is a
    known source of wrong ids. Errors (DatasetError) name the file: a colour (RGB) label, a
    16- or 32-bit or 1-bit label (converted somewhere: Cityscapes and GTA5 ids are 8-bit), and
    a missing or unreadable (truncated) file.
    """
    try:
        with Image.open(path) as im:
            refuse_lossy_label(path, im)
            depth = png_bit_depth(path)
            if im.mode not in LABEL_MODES or (depth is not None and depth > 8):
                what = ("not colours" if im.mode.startswith(("RGB", "CMYK", "LA")) else
                        "this file has been converted")
                bits = f", {depth} bits" if depth else ""
                raise DatasetError(f"{path}: unsupported label format (mode {im.mode}{bits}); "
                                   f"expected 8-bit label ids in a palette ('P') or "
                                   f"single-channel ('L') image, {what}", UNSUPPORTED_LABEL)
            return np.asarray(im).astype(np.int64)
    except FileNotFoundError:
        raise DatasetError(f"{path}: label file is missing", IMAGE_WITHOUT_LABEL) from None
    except Image.DecompressionBombError as e:
        raise too_large(path, e, "label") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DatasetError(f"{path}: unreadable label file ({e})", UNREADABLE_LABEL) from None


def image_size(path: Path, what: str = "image") -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels. what: "image" or
    "label", the kind of file, for the error (DatasetError) when the header cannot be read."""
    try:
        with Image.open(path) as im:
            return im.size
    except Image.DecompressionBombError as e:
        raise too_large(path, e, what) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        kind = UNREADABLE_LABEL if what == "label" else UNREADABLE_IMAGE
        raise DatasetError(f"{path}: unreadable {what} file ({e})", kind) from None


def label_without_image(label: Path, image: Path | None = None,
                        by_stem: dict | None = None) -> str:
    """The message for a label file that no image refers to. image: the image path the
    reader expects for it; when a file of the same name with another extension is there
    (X.jpg where X.png is read), the message says so, since that image is never read.
    by_stem: {stem: file names} of the image's folder (sibling_index), so that many labels
    need one listing of the folder, not a glob each."""
    if image is None:
        return f"{label}: no image has this label file"
    if by_stem is None:
        names = [p.name for p in image.parent.glob(f"{glob.escape(image.stem)}.*")
                 if p.is_file()]
    else:
        names = by_stem.get(image.stem, [])
    others = sorted(n for n in names if n != image.name)
    if others:
        return (f"{label}: no image has this label file: found {', '.join(others)}; expected "
                f"a PNG, {image}")
    return f"{label}: no image has this label file (expected {image})"


def sibling_index(folder: Path) -> dict:
    """{stem: [file names]} of the files in `folder` (none when it is missing)."""
    index = {}
    for p in (folder.iterdir() if folder.is_dir() else ()):
        index.setdefault(p.stem, []).append(p.name)
    return index


def unpaired_files(folder: Path, pattern: str, paired: set[Path],
                   known=lambda p: False, label: bool = False,
                   image_for=None) -> list[tuple[str, str]]:
    """The files under `folder` that a reader does not read, each as (kind, message) for
    `check()`: files that do not match `pattern` (a glob relative to folder) and, when
    `label`, label files matching it that no image refers to (`paired`). `known(path)` is
    True for companion files that the dataset ships and the reader does not need (Cityscapes'
    colour and instance files, the labelTrainIds files of mmsegmentation's converters), which
    are not reported. image_for(label path): the image path the reader expects for a label,
    for label_without_image's message."""
    if not folder.is_dir():
        return []
    matching = set(folder.glob(pattern))
    found, listings = [], {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p in paired or known(p):
            continue
        if p in matching and label:
            image = image_for(p) if image_for else None
            if image is not None and image.parent not in listings:
                listings[image.parent] = sibling_index(image.parent)
            found.append((LABEL_WITHOUT_IMAGE, label_without_image(
                p, image, listings.get(image.parent) if image is not None else None)))
        elif p not in matching:
            found.append((NOT_READ, f"{p}: the reader reads {folder}/{pattern} only"))
    return found


def none_found(name: str, folder: Path, pattern: str) -> DatasetError:
    """The error for a reader whose `pattern` (a glob relative to `folder`) matched no image:
    what the folder holds instead (how many files, of which extensions, the first few
    names), so that a tree of .jpg images where PNGs are read is named as such."""
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    if not files:
        return DatasetError(f"{name}: the split is empty: {folder} holds no files; expected "
                            f"{folder}/{pattern}")
    kinds = sorted({p.suffix or "(no extension)" for p in files})
    shown = [str(p.relative_to(folder)) for p in files[:3]]
    return DatasetError(f"{name}: the split is empty: no {folder}/{pattern}; found "
                        f"{len(files)} other file(s) ({', '.join(kinds)}), e.g. {shown}: "
                        f"convert them (the dataset's own images are PNG) or check the path",
                        NOT_READ)


def one_size(name: str, images: list[Path], known: dict | None = None,
             checking: bool = False) -> str | None:
    """None when every image of `images` has one size (from the file headers; `known`: sizes
    already read, by path), else the message naming the sizes, how many images have each,
    and a few images of the rarer ones: a training batch stacks images of one size, so a
    training split read at its images' own size must have one, or a size to resize to.
    checking: an unreadable header is skipped (the check lists it), not raised."""
    known = known or {}
    sizes = {}
    for image in images:
        try:
            size = known.get(image) or image_size(image)
        except DatasetError:
            if not checking:
                raise
            continue
        sizes.setdefault(size, []).append(image)
    if len(sizes) < 2:
        return None
    ranked = sorted(sizes.items(), key=lambda kv: -len(kv[1]))
    counts = ", ".join(f"{w}x{h}: {len(v)}" for (w, h), v in ranked)
    rare = [str(p) for _, v in ranked[1:] for p in v][:3]
    return (f"{name}: images of {len(sizes)} sizes ({counts}; e.g. {rare}) and no size to "
            f"resize them to; a batch holds images of one size: set data.source_size or "
            f"data.target_size (width, height) for this domain, or make the images one size")


def labels_without_images(name: str, folder: Path, pattern: str, paired: set[Path],
                          known, image_for, evaluation: bool) -> None:
    """For a reader opened to train or score (not checking): the label files of a split
    (`pattern`, a glob relative to `folder`, less the `known` companions) that no image
    refers to (`paired`). A score's denominator is the split's label files, so for an
    evaluation split (evaluation=True: Cityscapes val, and Cityscapes train, whose last
    images are target val) they are a DatasetError naming them (kind LABEL_WITHOUT_IMAGE)
    before anything trains; for a training-only split (the GTA5 or SYNTHIA source) a
    UserWarning naming their count and a few, as such a label cannot be trained on.
    Messages as label_without_image (an image of another extension is named)."""
    if not folder.is_dir():
        return
    lonely = [p for p in sorted(folder.glob(pattern)) if p not in paired and not known(p)]
    if not lonely:
        return
    shown = [label_without_image(p, image_for(p)) for p in lonely[:3]]  # a glob each: 3 only
    what = f"{name}: {len(lonely)} label file(s) without their image, e.g. {shown}"
    if evaluation:
        raise DatasetError(f"{what}; an evaluation split scores every label file: add or "
                           f"convert the images, or remove the labels (`wsda data check` "
                           f"lists them all)", LABEL_WITHOUT_IMAGE)
    warnings.warn(f"{what}; they are not trained on (`wsda data check` lists them all)",
                  stacklevel=3)


@dataclass
class Report:
    """What `check()` found: problem kind -> file names."""

    checked: int = 0
    problems: dict = field(default_factory=dict)
    unit: str = "image/label pairs"  # what `checked` counts
    labels_seen: set = field(default_factory=set)  # class indices the readable labels hold
    notes: dict = field(default_factory=dict)  # what is read one way of two: kind -> files

    def add(self, kind: str, message: str):
        self.problems.setdefault(kind, []).append(message)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self):
        lines = [f"checked {self.checked} {self.unit}: "
                 + ("no problems" if self.ok else
                    f"{sum(len(v) for v in self.problems.values())} problem(s)")]
        for kind, messages in self.problems.items():
            lines.append(f"  {kind}: {len(messages)}")
            lines += [f"    {m}" for m in messages[:5]]
            if len(messages) > 5:
                lines.append(f"    ... and {len(messages) - 5} more")
        for kind, files in self.notes.items():
            lines.append(f"  note, {kind}: {len(files)} file(s), e.g. {files[:3]}")
        return "\n".join(lines)


class FileSegmentation(Split):
    # read_image(path, decode=True) -> (H, W, 3) uint8 RGB, or None after checking the header
    # (decode=False): the image format rule of this kind of dataset. A subclass may widen it
    # (folders.read_folder_image also takes grey images).
    image_reader = staticmethod(read_image)

    def __init__(self, name: str, pairs: list[tuple[Path, Path]], protocol: Protocol,
                 id_source: str, read_label: Callable[[Path], np.ndarray],
                 size: tuple[int, int] | None = None, resize_labels: bool = True,
                 check_sizes: bool = True,
                 typical_area: np.ndarray | None = None, weak_label_fraction: float = 0.1,
                 checking: bool = False, unpaired: list[tuple[str, str]] = (),
                 on_size_mismatch: str = "leave out", mark_outside: bool = False):
        """pairs: (image, label) paths; id_source: "cityscapes" or "synthia" ids;
        size: (width, height) to resize images to, and labels too (nearest neighbour) unless
        resize_labels=False: evaluation keeps full-resolution labels and upsamples the logits
        to them (the paper evaluates at 2048x1024). typical_area (C,) shares of the image and
        weak_label_fraction decide the image-level labels (splits.Split); without
        typical_area the split can be read and checked but has no image-level labels.

        check_sizes: read the image and label headers and compare their sizes; a mismatched
        pair is left out with a warning (on_size_mismatch="leave out", training splits; it
        stays in `mismatched`, and evaluation says "scored on N of M images") or refused with
        a DatasetError naming the files (on_size_mismatch="refuse", evaluation splits).

        checking=False (training): a missing label file or an unreadable file header raises a
        DatasetError naming the file. checking=True (`wsda data check`): they are kept in
        `problems` instead and `check()` lists them with everything else, as it does the
        reader's `unpaired` files ((kind, message): files it never reads).

        mark_outside: items also carry "outside", (H, W) bool, the ground-truth pixels of a
        Cityscapes-19 class that the protocol drops, for evaluate(convention="official").
        """
        if on_size_mismatch not in ("leave out", "refuse"):
            raise ValueError(f"on_size_mismatch must be 'leave out' or 'refuse', got "
                             f"{on_size_mismatch!r}")
        if not pairs:
            raise DatasetError(f"{name}: the split is empty (no image/label pairs found)")
        self.problems = list(unpaired)  # (kind, message) found before reading any pixel
        missing = [(im, lb) for im, lb in pairs if not lb.is_file()]
        if missing and not checking:
            raise DatasetError(f"{name}: {len(missing)} label file(s) missing, e.g. "
                               f"{[str(lb) for _, lb in missing[:3]]}; `wsda data check` lists "
                               f"every problem", IMAGE_WITHOUT_LABEL)
        self.problems += [(IMAGE_WITHOUT_LABEL, f"{im}: no label file {lb}")
                          for im, lb in missing]
        pairs = [p for p in pairs if p not in missing]
        self.checked_pairs = len(pairs)  # pairs with both files, for check()'s count
        self.mismatched, self.image_sizes = [], {}
        if check_sizes:
            pairs = self._matching_sizes(name, pairs, checking, on_size_mismatch)
        self.notes = {}
        if not size:  # read as they are: a training batch stacks images of one size only
            found = one_size(name, [im for im, _ in pairs], self.image_sizes, checking)
            if found and not checking and name.endswith("train"):
                raise DatasetError(found, MIXED_SIZES)
            if found:  # the check cannot know the size training will resize to
                self.notes[MIXED_SIZES] = [found]
        self.name, self.pairs, self.protocol = name, pairs, protocol
        self.class_set = protocol.class_set
        self.id_source, self.read_label = id_source, read_label
        self.size = tuple(size) if size else None  # a config read back from JSON has lists
        self.resize_labels = resize_labels
        self.typical_area = None if typical_area is None else np.asarray(typical_area)
        self.weak_label_fraction = weak_label_fraction
        self.mark_outside = mark_outside

    def _matching_sizes(self, name, pairs, checking, on_size_mismatch):
        """The pairs whose image and label headers give one size; the others go to
        `mismatched` (and are refused or warned about, as __init__ says) or, unreadable, to
        `problems` when checking."""
        kept = []
        for im, lb in pairs:
            try:
                sizes = image_size(im, "image"), image_size(lb, "label")
            except DatasetError as e:
                if not checking:
                    raise DatasetError(f"{e}; `wsda data check` lists every problem",
                                       e.kind) from None
                self.problems.append((e.kind, str(e)))
                continue
            if sizes[0] == sizes[1]:
                kept.append((im, lb))
                self.image_sizes[im] = sizes[0]
            else:
                self.mismatched.append(f"{im}: image {sizes[0][0]}x{sizes[0][1]} vs label "
                                       f"{lb} {sizes[1][0]}x{sizes[1][1]}")
        if self.mismatched and on_size_mismatch == "refuse" and not checking:
            raise DatasetError(f"{name}: {len(self.mismatched)} image/label pair(s) whose "
                               f"sizes differ, e.g. {self.mismatched[:3]}; an evaluation "
                               f"split scores every image: fix or remove them (`wsda data "
                               f"check` lists them all)", SIZE_MISMATCH)
        if self.mismatched and not checking:
            warnings.warn(f"{name}: left out {len(self.mismatched)} pair(s) whose image "
                          f"and label sizes differ, e.g. {self.mismatched[:3]}", stacklevel=3)
        if not kept and not checking:
            raise DatasetError(f"{name}: no pair with matching image and label sizes")
        return kept

    def __len__(self):
        return len(self.pairs)

    def item_name(self, i: int) -> str:
        return self.pairs[i][0].name

    def _label(self, i: int, outside: bool = False):
        """The protocol label (H, W) uint8, and with outside=True also the (H, W) bool mask of
        pixels of classes the protocol drops; at the file's resolution."""
        label_path = self.pairs[i][1]
        ids = self.read_label(label_path)
        label = self.protocol.map_label_ids(ids, self.id_source, str(label_path))
        return (label, self.protocol.outside(ids, self.id_source)) if outside else label

    def _resize_label(self, label: np.ndarray) -> np.ndarray:
        if self.size and self.resize_labels:
            return np.asarray(Image.fromarray(label).resize(self.size, Image.NEAREST))
        return label

    def label(self, i: int) -> np.ndarray:
        """The (H, W) uint8 label of item i in protocol classes, resized like load(); reads
        the label file only."""
        return self._resize_label(self._label(i))

    def native_label_size(self, i: int) -> tuple[int, int]:
        """(width, height) of item i's label file, from its header: the resolution that
        predictions are scored and exported at."""
        return image_size(self.pairs[i][1], "label")

    def _load(self, i: int, outside: bool = False):
        image_path = self.pairs[i][0]
        image = self.image_reader(image_path)
        label = self._label(i, outside)
        label, mask = label if outside else (label, None)
        if image.shape[:2] != label.shape:
            raise DatasetError(f"{image_path}: image {image.shape[:2]} and label "
                               f"{label.shape} sizes differ", SIZE_MISMATCH)
        if self.size:
            image = np.array(Image.fromarray(image).resize(self.size, Image.BILINEAR))
            label = self._resize_label(label)
            if mask is not None:
                mask = self._resize_label(mask.astype(np.uint8)).astype(bool)
        return image, label, mask

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (H, W, 3) uint8 and label (H, W) uint8 of protocol classes, resized."""
        return self._load(i)[:2]

    def __getitem__(self, i: int) -> dict:
        if not self.mark_outside:
            return super().__getitem__(i)
        image, label, mask = self._load(i, outside=True)
        item = {"image": to_tensor(image), "label": torch.from_numpy(label.astype(np.int64)),
                "name": self.item_name(i), "index": i, "outside": torch.from_numpy(mask)}
        if self.has_image_labels:
            item["weak_label"] = torch.from_numpy(self._weak_label(i, label))
        return item

    def check(self) -> Report:
        """Read every pair; report every file the reader does not read (a label without its
        image, a stray file), unreadable or unsupported files, unknown ids and size
        mismatches, each by file name under its kind (Report.problems)."""
        report = Report()
        for kind, message in self.problems:
            report.add(kind, message)
        for m in self.mismatched:
            report.add(SIZE_MISMATCH, m)
        for i in range(len(self)):
            try:
                report.labels_seen.update(int(v) for v in np.unique(self.load(i)[1]))
            except DatasetError as e:
                report.add(e.kind or "unreadable file", str(e))
            except ValueError as e:  # unknown ids from the protocol
                report.add(UNKNOWN_IDS if "unknown" in str(e) else "invalid label", str(e))
        rotated = [str(image) for image, _ in self.pairs
                   if exif_orientation(image) not in (None, 1)]
        if rotated:
            report.notes[ROTATED] = rotated
        report.notes.update(getattr(self, "notes", {}))
        report.checked = self.checked_pairs
        return report
