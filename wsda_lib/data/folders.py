"""Any pair of domains from folders (data.dataset = "folders"), in mmsegmentation's custom
dataset layout, with one class file that maps both domains' stored label values to one class
list.

Each of data.source_root and data.target_root holds

    img_dir/{train,val,test}/NAME.png|.jpg|.jpeg   images: 8-bit RGB, RGBA, palette or grey
    ann_dir/{train,val,test}/NAME.png              labels, paired with images by file stem

Splits: source_train is the source's train folder and source_val its val folder (or, without
one, the last data.val_count training images); target_train, target_val and target_test are
the target's train, val and test folders. Every split needs its labels (target train's give
its image-level labels).

The class file (JSON: data.classes, or else `classes.json` in the target root):

    {"classes": ["road", "car", ...],      one class list for both domains
     "values": {"7": "road", "26": "car"},  stored label value -> class (default: i -> i-th)
     "colours": {"128,64,128": "road"},     or colour-coded RGB labels: colour -> class
     "ignore": 255,                         stored value (or "r,g,b") of unlabelled pixels
     "palette": [[128, 64, 128], ...]}      display colours (optional)

Labels are single-channel 8-bit index PNGs ('L' or 'P', read as indices, never colours), or
8-bit RGB PNGs when the class file gives "colours". A value or colour the class file does
not name is an error that names the label file, the class file and the value; so is a 16-bit
label, and an image or label that cannot be read (DatasetError, files.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..config import check_range
from .classes import IGNORE_INDEX, ClassSet
from .files import (
    NOT_READ,
    UNREADABLE_IMAGE,
    UNREADABLE_LABEL,
    UNSUPPORTED_IMAGE,
    UNSUPPORTED_LABEL,
    DatasetError,
    FileSegmentation,
    png_bit_depth,
    read_index_png,
    unpaired_files,
)
from .real import _typical_area
from .splits import Benchmark

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FOLDER_IMAGE_MODES = ("RGB", "RGBA", "P", "L")  # 8-bit; grey is converted to RGB explicitly
CLASS_FILE = "classes.json"


def _colour_code(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 colours -> (...) int64 codes r·65536 + g·256 + b."""
    rgb = np.asarray(rgb, np.int64)
    return rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2]


def _parse_colour(text: str, where: str) -> int:
    parts = text.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) < 256 for p in parts):
        raise ValueError(f"{where}: colour {text!r}: expected 'r,g,b' with 0-255 each")
    return int(_colour_code(np.array([int(p) for p in parts])))


@dataclass(frozen=True)
class ClassFile:
    """A folder dataset's classes: the class set, and the map from stored label value (or
    colour code, when `colours`) to class index, IGNORE_INDEX for the ignore value."""

    path: Path
    class_set: ClassSet
    values: dict          # stored value or colour code -> class index (or IGNORE_INDEX)
    colours: bool

    def read_label(self, path: Path) -> np.ndarray:
        """(H, W) int64 stored values (index labels) or colour codes (colour labels)."""
        return _read_colour_png(path) if self.colours else read_index_png(path)

    def map_label_ids(self, ids: np.ndarray, source: str = "", name: str = "label"):
        """Stored values -> class indices (uint8; 255 = ignore); a value the class file does
        not name raises ValueError naming `name`, the class file and the values."""
        found, inverse = np.unique(np.asarray(ids), return_inverse=True)
        unknown = [int(v) for v in found if int(v) not in self.values]
        if unknown:
            shown = ([f"{v >> 16},{(v >> 8) & 255},{v & 255}" for v in unknown[:10]]
                     if self.colours else unknown[:10])
            raise ValueError(f"{name}: unknown label {'colours' if self.colours else 'values'}"
                             f" {shown}, not in the class file {self.path}")
        table = np.array([self.values[int(v)] for v in found], np.uint8)
        return table[inverse].reshape(np.shape(ids))

    def to_stored(self, prediction: np.ndarray) -> np.ndarray:
        """Class indices (H, W) -> the dataset's own stored values (uint8, index labels) or
        colours (H, W, 3) uint8 (colour labels), for exporting predictions."""
        back = {c: v for v, c in sorted(self.values.items(), reverse=True) if c != IGNORE_INDEX}
        codes = np.array([back[c] for c in range(self.class_set.num_classes)], np.int64)
        out = codes[np.asarray(prediction, np.int64)]
        if not self.colours:
            return out.astype(np.uint8)
        return np.stack([out >> 16, (out >> 8) & 255, out & 255], -1).astype(np.uint8)


def read_class_file(path: str | Path) -> ClassFile:
    """The class file at `path` (JSON, the module docstring's format). Errors name the file
    and the field: a missing file, invalid JSON, no "classes", a value that names no class,
    a stored value outside 0-255, or two of "values" and "colours"."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: class file is missing (data.classes, or {CLASS_FILE} in "
                         f"data.target_root)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    names = spec.get("classes") if isinstance(spec, dict) else None
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise ValueError(f"{path}: \"classes\" must be a non-empty list of class names")
    if "values" in spec and "colours" in spec:
        raise ValueError(f"{path}: give \"values\" (index labels) or \"colours\" (colour "
                         f"labels), not both")
    colours = "colours" in spec
    given = spec.get("colours") if colours else spec.get("values", {str(i): n for i, n
                                                                    in enumerate(names)})
    values = {}
    for key, cls in given.items():
        if cls not in names:
            raise ValueError(f"{path}: {key!r} maps to {cls!r}, which is not in \"classes\"")
        values[_stored(key, colours, path)] = names.index(cls)
    ignore = spec.get("ignore", "255,255,255" if colours else 255)
    values[_stored(str(ignore), colours, path)] = IGNORE_INDEX
    palette = spec.get("palette") or [_default_colour(i) for i in range(len(names))]
    if len(palette) != len(names):
        raise ValueError(f"{path}: \"palette\" has {len(palette)} colours for {len(names)} "
                         f"classes")
    class_set = ClassSet(f"folders:{path}", tuple(names), tuple(tuple(c) for c in palette))
    return ClassFile(path, class_set, values, colours)


def _stored(key: str, colours: bool, path: Path) -> int:
    if colours:
        return _parse_colour(key, str(path))
    if not key.strip().isdigit() or int(key) > 255:
        raise ValueError(f"{path}: stored label value {key!r}: expected an integer 0-255 "
                         f"(labels are 8-bit)")
    return int(key)


def _default_colour(i: int) -> list[int]:
    return [(37 * i + 80) % 256, (91 * i + 40) % 256, (53 * i + 160) % 256]


def _read_colour_png(path: Path) -> np.ndarray:
    """(H, W) int64 colour codes of an 8-bit RGB label PNG; DatasetError names the file."""
    try:
        with Image.open(path) as im:
            depth = png_bit_depth(path)
            if im.mode != "RGB" or (depth is not None and depth > 8):
                raise DatasetError(f"{path}: unsupported label format (mode {im.mode}); the "
                                   f"class file gives colours, so 8-bit RGB labels are "
                                   f"expected", UNSUPPORTED_LABEL)
            return _colour_code(np.asarray(im))
    except FileNotFoundError:
        raise DatasetError(f"{path}: label file is missing", UNREADABLE_LABEL) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DatasetError(f"{path}: unreadable label file ({e})", UNREADABLE_LABEL) from None


def read_folder_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an 8-bit PNG or JPEG, colour or grey (grey and palette are
    converted to RGB explicitly, alpha dropped); DatasetError names the file otherwise."""
    try:
        with Image.open(path) as im:
            depth = png_bit_depth(path)
            if im.mode not in FOLDER_IMAGE_MODES or (depth is not None and depth > 8):
                raise DatasetError(f"{path}: unsupported image format (mode {im.mode}); "
                                   f"expected an 8-bit RGB or grey image", UNSUPPORTED_IMAGE)
            return np.array(im.convert("RGB"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file is missing", "missing image file") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DatasetError(f"{path}: unreadable image ({e})", UNREADABLE_IMAGE) from None


class FolderSegmentation(FileSegmentation):
    """One split of a folder dataset: FileSegmentation with images read by
    read_folder_image (grey and JPEG too) and labels mapped by a ClassFile."""

    def _load(self, i: int, outside: bool = False):
        image_path = self.pairs[i][0]
        image = read_folder_image(image_path)
        label = self._label(i)
        if image.shape[:2] != label.shape:
            raise DatasetError(f"{image_path}: image {image.shape[:2]} and label "
                               f"{label.shape} sizes differ")
        if self.size:
            image = np.array(Image.fromarray(image).resize(self.size, Image.BILINEAR))
            label = self._resize_label(label)
        return image, label, None


def folder_pairs(root: Path, split: str) -> tuple[list[tuple[Path, Path]], list]:
    """(image, label) pairs of img_dir/`split` and ann_dir/`split` under root, paired by file
    stem, and the files no pair reads ((kind, message), for `check()`). A missing folder is
    an error naming it."""
    images_dir, labels_dir = root / "img_dir" / split, root / "ann_dir" / split
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise DatasetError(f"{folder}: folder is missing; a folder dataset holds "
                               f"img_dir/{split} and ann_dir/{split} (docs: README, Your own "
                               f"data)")
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    pairs = [(im, labels_dir / f"{im.stem}.png") for im in images]
    paired = {p for pair in pairs for p in pair}
    unpaired = [(NOT_READ, f"{p}: not an image ({', '.join(IMAGE_SUFFIXES)})")
                for p in sorted(images_dir.iterdir()) if p.is_file() and p not in paired]
    unpaired += unpaired_files(labels_dir, "*.png", paired, label=True,
                               image_for=lambda lb: images_dir / f"{lb.stem}.png")
    return pairs, unpaired


def open_folder_split(root, split: str, class_file: ClassFile, name: str, size=None,
                      checking: bool = False, **kwargs) -> FolderSegmentation:
    """Split `split` (train, val or test) of the folder dataset at root, as split `name`."""
    pairs, unpaired = folder_pairs(Path(root), split)
    return FolderSegmentation(name, pairs, class_file, "folders", class_file.read_label,
                              size, checking=checking, unpaired=unpaired if checking else (),
                              **kwargs)


def _split(root: Path, folder: str, name: str, class_file: ClassFile, size, pairs=None,
           typical=None, fraction: float = 0.1, evaluation: bool = False):
    """Split `name` from img_dir/`folder` under root, or from `pairs` of it."""
    pairs = folder_pairs(root, folder)[0] if pairs is None else pairs
    extra = dict(on_size_mismatch="refuse") if evaluation else {}
    return FolderSegmentation(name, pairs, class_file, "folders",
                              class_file.read_label, size, typical_area=typical,
                              weak_label_fraction=fraction, **extra)


def load_folders(data_cfg, cache_dir) -> Benchmark:
    """The five splits (module docstring) from data_cfg.source_root and .target_root, with
    the class file data_cfg.classes (or target_root/classes.json). Use `wsda_lib.data.load`.
    Errors name the field or the file."""
    for field_name in ("source_root", "target_root"):
        root = getattr(data_cfg, field_name)
        if not root or not Path(root).is_dir():
            raise ValueError(f"data.{field_name}={root!r}: expected the folder of a domain "
                             f"(img_dir/ and ann_dir/) for data.dataset='folders'")
    source, target = Path(data_cfg.source_root), Path(data_cfg.target_root)
    class_file = read_class_file(data_cfg.classes or target / CLASS_FILE)
    train = _split(source, "train", "source_train", class_file, data_cfg.source_size)
    if (source / "img_dir" / "val").is_dir():
        held_out, kept = _split(source, "val", "source_val", class_file, None).pairs, train.pairs
    else:
        check_range("data.val_count", data_cfg.val_count)
        if len(train) <= data_cfg.val_count:
            raise ValueError(f"{source / 'img_dir/train'}: {len(train)} images, not more than "
                             f"data.val_count={data_cfg.val_count} to hold out as source_val "
                             f"(or add img_dir/val)")
        held_out, kept = train.pairs[-data_cfg.val_count:], train.pairs[:-data_cfg.val_count]
    source_train = _split(source, "train", "source_train", class_file, data_cfg.source_size,
                          pairs=kept)
    typical = _typical_area(source_train, Path(cache_dir))
    f, size_s, size_t = data_cfg.weak_label_fraction, data_cfg.source_size, data_cfg.target_size
    splits = {
        "source_train": _split(source, "train", "source_train", class_file, size_s, kept,
                               typical, f),
        "source_val": _split(source, "val", "source_val", class_file, size_s, held_out,
                             typical, f),
        "target_train": _split(target, "train", "target_train", class_file, size_t, None,
                               typical, f),
        "target_val": _split(target, "val", "target_val", class_file, size_t, None, typical,
                             f, evaluation=True),
        "target_test": _split(target, "test", "target_test", class_file, size_t, None,
                              typical, f, evaluation=True),
    }
    return Benchmark(splits, class_file.class_set, typical, Path(cache_dir))


def export_benchmark(benchmark: Benchmark, out: str | Path) -> dict:
    """Write `benchmark` (the embedded one) as a folder dataset: out/source and out/target
    in this module's layout, index labels (value = class index, 255 = ignore) and the class
    file out/target/classes.json; returns {split: number of images}. Refuses an `out` that
    exists, so that nothing is overwritten."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: exists; export-embedded writes a new folder only")
    where = {"source_train": ("source", "train"), "source_val": ("source", "val"),
             "target_train": ("target", "train"), "target_val": ("target", "val"),
             "target_test": ("target", "test")}
    counts = {}
    for name, (domain, folder) in where.items():
        split = benchmark[name]
        for sub in ("img_dir", "ann_dir"):
            (out / domain / sub / folder).mkdir(parents=True)
        for i in range(len(split)):
            image, label = split.load(i)
            stem = f"{i:05d}"
            Image.fromarray(image).save(out / domain / "img_dir" / folder / f"{stem}.png")
            Image.fromarray(label.astype(np.uint8), "L").save(
                out / domain / "ann_dir" / folder / f"{stem}.png")
        counts[name] = len(split)
    names = list(benchmark.class_set.names)
    (out / "target" / CLASS_FILE).write_text(json.dumps(
        {"classes": names, "ignore": IGNORE_INDEX,
         "palette": [list(c) for c in benchmark.class_set.colors]}, indent=1) + "\n")
    return counts
