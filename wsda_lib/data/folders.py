"""Any pair of domains from folders (data.dataset = "folders"), in mmsegmentation's custom
dataset layout, with one class file that maps both domains' stored label values to one class
list.

Each of data.source_root and data.target_root holds

    img_dir/{train,val,test}/NAME.png|.jpg|.jpeg   images: 8-bit RGB, RGBA, palette or grey
    ann_dir/{train,val,test}/NAME.png              labels, paired with images by file stem

Splits: source_train is the source's train folder and source_val its val folder (or, without
one, the last data.val_count training images); target_train, target_val and target_test are
the target's train, val and test folders. Target val and test need labels; target train
needs none (UnlabelledImages, when there is no ann_dir/train): its image-level labels and
points come from the CSVs data.image_labels and data.points (tags.py), or else from its
label maps by the paper's rule.

The class file (JSON or YAML: data.classes, or else `classes.json` in the target root; or
a ready-made one by name, READY_MADE: "cityscapes-19", "-16", "-13", "cityscapes-19-trainids"):

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

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

from wsda_lib.core.config import check_range
from wsda_lib.data.classes import CITYSCAPES_LABEL_TO_TRAIN, IGNORE_INDEX, ClassSet, protocol
from wsda_lib.data.files import (
    MIXED_SIZES,
    NOT_READ,
    UNREADABLE_IMAGE,
    UNREADABLE_LABEL,
    UNSUPPORTED_IMAGE,
    UNSUPPORTED_LABEL,
    DatasetError,
    FileSegmentation,
    Report,
    image_size,
    one_size,
    png_bit_depth,
    read_index_png,
    refuse_lossy_label,
    too_large,
    unpaired_files,
)
from wsda_lib.data.real import _typical_area
from wsda_lib.data.splits import Benchmark, Split
from wsda_lib.data.tags import read_image_labels, read_points, write_image_labels, write_points

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FOLDER_IMAGE_MODES = ("RGB", "RGBA", "P", "L")  # 8-bit; grey is converted to RGB explicitly
CLASS_FILE = "classes.json"
IMAGE_LABELS, POINTS = "image_labels.csv", "points.csv"  # as export_benchmark names them


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

    to_label_ids = to_stored  # the name export.export_predictions calls on a protocol


READY_MADE = ("cityscapes-19", "cityscapes-16", "cityscapes-13", "cityscapes-19-trainids")


def ready_made(name: str) -> dict:
    """The class file spec of a ready-made protocol: "cityscapes-19", "-16" or "-13" for
    labels in Cityscapes labelIds (gtFine_labelIds, GTA5; every other id is ignored), and
    "cityscapes-19-trainids" for labels in trainIds (mmsegmentation's *_labelTrainIds)."""
    if name not in READY_MADE:
        raise ValueError(f"data.classes={name!r}: no such ready-made class file; expected a "
                         f"path or one of {list(READY_MADE)}")
    proto = protocol(int(name.split("-")[1]))
    names = list(proto.class_set.names)
    if name.endswith("trainids"):
        values = {str(i): n for i, n in enumerate(names)}
    else:
        values = {str(i): "" for i in range(34)}
        for lid, train in CITYSCAPES_LABEL_TO_TRAIN.items():
            if int(proto.train_to_protocol[train]) != IGNORE_INDEX:
                values[str(lid)] = names[int(proto.train_to_protocol[train])]
    return {"classes": names, "values": values, "ignore": 255,
            "palette": [list(c) for c in proto.class_set.colors]}


def _load_spec(path: Path) -> dict:
    """The class file's content: JSON, or YAML for a .yaml/.yml file."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # whatever the locale's codec
    except FileNotFoundError:
        raise ValueError(f"{path}: class file is missing (data.classes, or {CLASS_FILE} in "
                         f"data.target_root)") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: class file is not UTF-8 text ({e}); save it as UTF-8") \
            from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def read_class_file(path: str | Path) -> ClassFile:
    """The class file at `path` (JSON or YAML, the module docstring's format), or a ready-made
    one by name (READY_MADE). Errors name the file and the field: a missing file, invalid
    JSON or YAML, no "classes", a value that names no class, a stored value outside 0-255,
    or both "values" and "colours". A value mapped to "" is ignored, like the ignore value."""
    if str(path) in READY_MADE:
        spec, path = ready_made(str(path)), Path(str(path))
        digest = str(path)
    else:
        path = Path(path)
        spec = _load_spec(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    names = spec.get("classes") if isinstance(spec, dict) else None
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise ValueError(f"{path}: \"classes\" must be a non-empty list of class names")
    if len(names) > IGNORE_INDEX:
        raise ValueError(f"{path}: {len(names)} classes; at most {IGNORE_INDEX} fit: labels "
                         f"are 8-bit and {IGNORE_INDEX} is the ignore value, so class "
                         f"{IGNORE_INDEX} could never be labelled, trained or exported")
    if "values" in spec and "colours" in spec:
        raise ValueError(f"{path}: give \"values\" (index labels) or \"colours\" (colour "
                         f"labels), not both")
    colours = "colours" in spec
    given = spec.get("colours") if colours else spec.get("values", {str(i): n for i, n
                                                                    in enumerate(names)})
    values = {}
    for key, cls in given.items():
        if cls != "" and cls not in names:
            raise ValueError(f"{path}: {key!r} maps to {cls!r}, which is not in \"classes\"")
        values[_stored(str(key), colours, path)] = names.index(cls) if cls else IGNORE_INDEX
    ignore = spec.get("ignore", "255,255,255" if colours else 255)
    ignored = _stored(str(ignore), colours, path)
    if values.get(ignored, IGNORE_INDEX) != IGNORE_INDEX:
        raise ValueError(f"{path}: \"ignore\" {ignore!r} is also the stored value of class "
                         f"{names[values[ignored]]!r}; give the ignore value a value of its own")
    values[ignored] = IGNORE_INDEX
    unstored = [n for k, n in enumerate(names) if k not in values.values()]
    if unstored:
        raise ValueError(f"{path}: classes {unstored} have no stored "
                         f"{'colour' if colours else 'value'}; no label could hold them, and "
                         f"their predictions could not be exported")
    palette = spec.get("palette") or [_default_colour(i) for i in range(len(names))]
    if len(palette) != len(names):
        raise ValueError(f"{path}: \"palette\" has {len(palette)} colours for {len(names)} "
                         f"classes")
    class_set = ClassSet(f"folders:{path}#{digest}", tuple(names),
                         tuple(tuple(c) for c in palette))
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
            refuse_lossy_label(path, im)
            depth = png_bit_depth(path)
            if im.mode != "RGB" or (depth is not None and depth > 8):
                raise DatasetError(f"{path}: unsupported label format (mode {im.mode}); the "
                                   f"class file gives colours, so 8-bit RGB labels are "
                                   f"expected", UNSUPPORTED_LABEL)
            return _colour_code(np.asarray(im))
    except FileNotFoundError:
        raise DatasetError(f"{path}: label file is missing", UNREADABLE_LABEL) from None
    except Image.DecompressionBombError as e:
        raise too_large(path, e, "label") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DatasetError(f"{path}: unreadable label file ({e})", UNREADABLE_LABEL) from None


def read_folder_image(path: Path, decode: bool = True) -> np.ndarray | None:
    """(H, W, 3) uint8 RGB of an 8-bit PNG or JPEG, colour or grey (grey and palette are
    converted to RGB explicitly, alpha dropped); DatasetError names the file otherwise.
    decode=False checks the header alone and returns None (files.read_image's rule,
    widened to grey)."""
    try:
        with Image.open(path) as im:
            depth = png_bit_depth(path)
            if im.mode not in FOLDER_IMAGE_MODES or (depth is not None and depth > 8):
                raise DatasetError(f"{path}: unsupported image format (mode {im.mode}); "
                                   f"expected an 8-bit RGB or grey image", UNSUPPORTED_IMAGE)
            return np.array(im.convert("RGB")) if decode else None
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file is missing", "missing image file") from None
    except Image.DecompressionBombError as e:
        raise too_large(path, e, "image") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DatasetError(f"{path}: unreadable image ({e})", UNREADABLE_IMAGE) from None


class FolderSegmentation(FileSegmentation):
    """One split of a folder dataset: FileSegmentation with images read by
    read_folder_image (grey and JPEG too) and labels mapped by a ClassFile."""

    image_reader = staticmethod(read_folder_image)


class UnlabelledImages(Split):
    """Training images without pixel labels (a target train folder with no ann_dir/train):
    label(i) is all IGNORE_INDEX at the training size, and the image-level labels and points
    are the ones given (`tags`, `points`, tags.py), if any. Nothing that needs the pixel
    labels (the oracle, the pseudo labels' quality) can use it: has_pixel_labels is False."""

    has_pixel_labels = False
    image_reader = staticmethod(read_folder_image)

    def __init__(self, name: str, images: list[Path], class_set: ClassSet, size=None,
                 tags: np.ndarray | None = None, points: np.ndarray | None = None,
                 folder: Path | None = None, unpaired: list = (), checking: bool = False):
        if not images:
            raise DatasetError(f"{name}: the split is empty: no images in {folder}")
        self.name, self.images, self.class_set = name, list(images), class_set
        self.size = tuple(size) if size else None
        self.tags, self.points, self.folder = tags, points, folder
        self.problems = list(unpaired)  # (kind, message): files never read, for check()
        mixed = None if self.size else one_size(name, self.images, checking=checking)
        if mixed and not checking:
            raise DatasetError(mixed, MIXED_SIZES)
        self.notes = {MIXED_SIZES: [mixed]} if mixed else {}

    def _weak_label(self, i: int, label: np.ndarray) -> np.ndarray:
        if self.tags is None:
            raise ValueError(f"{self.name}: no image-level labels: there is no ann_dir/train "
                             f"beside {self.folder}, and data.image_labels is unset")
        return self.tags[i]

    @property
    def pairs(self) -> list[tuple[Path, None]]:  # what data.checks reads: images only
        return [(image, None) for image in self.images]

    def __len__(self):
        return len(self.images)

    def item_name(self, i: int) -> str:
        return self.images[i].name

    def label(self, i: int) -> np.ndarray:
        width, height = self.size or image_size(self.images[i])
        return np.full((height, width), IGNORE_INDEX, np.uint8)

    def load(self, i: int):
        image = read_folder_image(self.images[i])
        if self.size:
            image = np.array(Image.fromarray(image).resize(self.size, Image.BILINEAR))
        return image, self.label(i)

    def check(self) -> Report:
        """Read every image; report those that cannot be read and the files that are not
        images (files.Report)."""
        report = Report(checked=len(self), unit="images")
        for kind, message in self.problems:
            report.add(kind, message)
        for image in self.images:
            try:
                read_folder_image(image)
            except DatasetError as e:
                report.add(e.kind or UNREADABLE_IMAGE, str(e))
        report.notes.update(self.notes)
        return report


def folder_images(images_dir: Path, img_suffix: str | None = None) -> list[tuple[Path, str]]:
    """(image, base) of every image under images_dir, its subfolders included, sorted: base
    is the path relative to images_dir without `img_suffix` (data.img_suffix, e.g.
    "_leftImg8bit.png"; None: any of IMAGE_SUFFIXES, base = the path without its extension),
    what pairs it with its label and names it in the CSVs. A missing folder is an error
    naming it."""
    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir}: folder is missing; a folder dataset holds "
                           f"img_dir/{images_dir.name} and ann_dir/{images_dir.name} (docs: "
                           f"README, Your own data)")
    found = []
    for p in sorted(images_dir.rglob("*")):
        relative = p.relative_to(images_dir).as_posix()
        if not p.is_file():
            continue
        if img_suffix is None and p.suffix.lower() in IMAGE_SUFFIXES:
            found.append((p, relative[: -len(p.suffix)]))
        elif img_suffix is not None and relative.endswith(img_suffix):
            found.append((p, relative[: -len(img_suffix)]))
    bases = {}
    for p, base in found:
        bases.setdefault(base, []).append(p.name)
    shared = {b: names for b, names in bases.items() if len(names) > 1}
    if shared:
        base, names = next(iter(shared.items()))
        raise DatasetError(f"{images_dir}: {len(shared)} name(s) shared by two images, e.g. "
                           f"{names} ({base!r}), which would read one label; keep one, or set "
                           f"data.img_suffix to the ending of the images to read")
    return found


def not_images(images_dir: Path, read, img_suffix: str | None = None) -> list[tuple[str, str]]:
    """The files under images_dir that are not among `read` (the images found), each as
    (kind, message) for `check()`: nothing there goes unreported."""
    what = img_suffix or ", ".join(IMAGE_SUFFIXES)
    return [(NOT_READ, f"{p}: not an image ({what})")
            for p in sorted(images_dir.rglob("*")) if p.is_file() and p not in read]


def folder_pairs(root: Path, split: str, img_suffix: str | None = None,
                 seg_map_suffix: str = ".png") -> tuple[list[tuple[Path, Path]], list]:
    """(image, label) pairs of img_dir/`split` and ann_dir/`split` under root (subfolders
    included), paired as mmsegmentation pairs them: the image's base (folder_images) plus
    `seg_map_suffix` (data.seg_map_suffix, e.g. "_gtFine_labelIds.png") names its label;
    and the files no pair reads ((kind, message), for `check()`). A missing folder is an
    error naming it."""
    images_dir, labels_dir = root / "img_dir" / split, root / "ann_dir" / split
    images = folder_images(images_dir, img_suffix)
    if not labels_dir.is_dir():
        raise DatasetError(f"{labels_dir}: folder is missing; a folder dataset holds "
                           f"img_dir/{split} and ann_dir/{split} (docs: README, Your own data)")
    pairs = [(im, labels_dir / f"{base}{seg_map_suffix}") for im, base in images]
    paired = {p for pair in pairs for p in pair}
    unpaired = not_images(images_dir, paired, img_suffix)
    unpaired += unpaired_files(labels_dir, f"**/*{seg_map_suffix}", paired, label=True)
    return pairs, unpaired


def open_folder_split(root, split: str, class_file: ClassFile, name: str, size=None,
                      pairs=None, checking: bool = False, suffixes=(None, ".png"),
                      **kwargs) -> FolderSegmentation:
    """Split `split` (train, val or test) of the folder dataset at root, as split `name`;
    `pairs`: only these of its (image, label) pairs; suffixes: (img_suffix, seg_map_suffix)
    as folder_pairs takes them. kwargs go to FileSegmentation."""
    unpaired = []
    if pairs is None:
        pairs, unpaired = folder_pairs(Path(root), split, *suffixes)
    return FolderSegmentation(name, pairs, class_file, "folders", class_file.read_label,
                              size, checking=checking, unpaired=unpaired if checking else (),
                              **kwargs)


def _suffixes(data_cfg) -> tuple[str | None, str]:
    return data_cfg.img_suffix, data_cfg.seg_map_suffix


def _source_pairs(source: Path, data_cfg) -> tuple[list, list]:
    """(source_train pairs, source_val pairs): img_dir/train and img_dir/val, or without
    img_dir/val the last data.val_count training pairs held out."""
    train = folder_pairs(source, "train", *_suffixes(data_cfg))[0]
    if (source / "img_dir" / "val").is_dir():
        return train, folder_pairs(source, "val", *_suffixes(data_cfg))[0]
    check_range("data.val_count", data_cfg.val_count)
    if len(train) <= data_cfg.val_count:
        raise ValueError(f"{source / 'img_dir/train'}: {len(train)} images, not more than "
                         f"data.val_count={data_cfg.val_count} to hold out as source_val "
                         f"(or add img_dir/val)")
    return train[:-data_cfg.val_count], train[-data_cfg.val_count:]


def _target_train(target: Path, data_cfg, class_file: ClassFile, typical):
    """Target train: FolderSegmentation where ann_dir/train is there, else UnlabelledImages;
    image-level labels from data.image_labels when given (else derived from the labels), and
    points from data.points when given (with data.points alone, the classes clicked in an
    image are the ones present: every image needs a click). Errors name file and field."""
    labelled = (target / "ann_dir" / "train").is_dir()
    images = folder_images(target / "img_dir" / "train", data_cfg.img_suffix)
    if labelled and images and not any((target / "ann_dir" / "train").rglob("*")):
        raise DatasetError(f"{target / 'ann_dir/train'}: empty; remove the folder if target "
                           f"train has no pixel labels (then data.image_labels and data.points "
                           f"give its weak labels)")
    if labelled:
        split = open_folder_split(target, "train", class_file, "target_train",
                                  data_cfg.target_size, suffixes=_suffixes(data_cfg),
                                  typical_area=typical,
                                  weak_label_fraction=data_cfg.weak_label_fraction)
    else:
        split = UnlabelledImages("target_train", [im for im, _ in images],
                                 class_file.class_set, data_cfg.target_size,
                                 folder=target / "img_dir" / "train")  # strays: data check
    _read_tags(split, data_cfg, images, class_file.class_set.names)
    return split


def _read_tags(split, data_cfg, images, classes) -> None:
    """Set split.tags and split.points from data.image_labels and data.points (tags.py), for
    the split's images (a labelled split may have left some out: size mismatches)."""
    every = [base for _, base in images]
    position = {im: k for k, (im, _) in enumerate(images)}
    kept = [position[p[0]] for p in split.pairs]
    tags = (read_image_labels(data_cfg.image_labels, images, classes)
            if data_cfg.image_labels else None)
    if data_cfg.points:
        points = read_points(data_cfg.points, images, classes,
                             [image_size(im) for im, _ in images], data_cfg.target_size,
                             present=tags)
        split.points = points[kept]
        if tags is None:
            tags = (points >= 0).astype(np.float32)
            lonely = [every[i] for i in np.flatnonzero(tags.sum(1) == 0)]
            if lonely:
                raise ValueError(f"{data_cfg.points} (data.points): {len(lonely)} image(s) "
                                 f"without a point, e.g. {lonely[:3]}; with data.points alone "
                                 f"the clicked classes are the present ones, so give each "
                                 f"image a click per present class, or data.image_labels")
    if tags is not None:
        split.tags = tags[kept]


def load_folders(data_cfg, cache_dir) -> Benchmark:
    """The five splits (module docstring) from data_cfg.source_root and .target_root, with
    the class file data_cfg.classes (or target_root/classes.json) and, for target train,
    the CSVs data_cfg.image_labels and data_cfg.points (tags.py). Use `wsda_lib.data.load`.
    Target val and test keep their labels at native resolution (logits are upsampled to
    them, as for Cityscapes). Errors name the field or the file."""
    for field_name in ("source_root", "target_root"):
        root = getattr(data_cfg, field_name)
        if not root or not Path(root).is_dir():
            raise ValueError(f"data.{field_name}={root!r}: expected the folder of a domain "
                             f"(img_dir/ and ann_dir/) for data.dataset='folders'")
    source, target = Path(data_cfg.source_root), Path(data_cfg.target_root)
    class_file = read_class_file(data_cfg.classes or target / CLASS_FILE)
    f, size_s, size_t = data_cfg.weak_label_fraction, data_cfg.source_size, data_cfg.target_size
    kept, held_out = _source_pairs(source, data_cfg)
    source_train = open_folder_split(source, "train", class_file, "source_train", size_s,
                                     kept, weak_label_fraction=f)
    typical = source_train.typical_area = _typical_area(source_train, Path(cache_dir))
    evaluation = dict(typical_area=typical, weak_label_fraction=f, resize_labels=False,
                      on_size_mismatch="refuse")
    splits = {
        "source_train": source_train,
        "source_val": open_folder_split(source, "val", class_file, "source_val", size_s,
                                        held_out, typical_area=typical, weak_label_fraction=f),
        "target_train": _target_train(target, data_cfg, class_file, typical),
        "target_val": open_folder_split(target, "val", class_file, "target_val", size_t,
                                        **evaluation),
        "target_test": open_folder_split(target, "test", class_file, "target_test", size_t,
                                         **evaluation),
    }
    return Benchmark(splits, class_file.class_set, typical, Path(cache_dir))


def export_names(n: int) -> list[str]:
    """The file names export_benchmark gives the n images of a split."""
    return [f"{i:05d}.png" for i in range(n)]


def export_benchmark(benchmark: Benchmark, out: str | Path, points=None) -> dict:
    """Write `benchmark` (the embedded one) as a folder dataset: out/source and out/target
    in this module's layout, index labels (value = class index, 255 = ignore), the class
    file out/target/classes.json, and target train's weak labels as a WDA user has them
    (tags.py): out/target/image_labels.csv (the image-level labels its label maps give) and,
    given `points` (N, C) flat indices of target train's clicks (−1: none), out/target/
    points.csv (`wsda data export-embedded` gives point_supervision.split_points').
    Returns {split: number of images}. Refuses an `out` that exists, so that nothing is
    overwritten."""
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
            stem = export_names(len(split))[i][:-4]
            Image.fromarray(image).save(out / domain / "img_dir" / folder / f"{stem}.png")
            Image.fromarray(label.astype(np.uint8), "L").save(
                out / domain / "ann_dir" / folder / f"{stem}.png")
        counts[name] = len(split)
    names = list(benchmark.class_set.names)
    target = benchmark["target_train"]
    files = export_names(len(target))
    write_image_labels(out / "target" / IMAGE_LABELS, files, target.weak_labels, names)
    if points is not None:
        write_points(out / "target" / POINTS, files, points, names, target.label(0).shape[1])
    (out / "target" / CLASS_FILE).write_text(json.dumps(
        {"classes": names, "ignore": IGNORE_INDEX,
         "palette": [list(c) for c in benchmark.class_set.colors]}, indent=1) + "\n",
        encoding="utf-8")
    return counts
