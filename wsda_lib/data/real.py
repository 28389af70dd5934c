"""The real experiment's splits, in the shape of the embedded benchmark (a `Benchmark`).

* source_train / source_val: GTA5 or SYNTHIA, the last `val_count` images held out as source
  val (for learning curves only);
* target_train / target_val: Cityscapes train, the last `val_count` images held out as target
  val, the only target split tuning may look at; the rest is the unlabelled target;
* target_test: Cityscapes val, the paper's evaluation set, with labels kept at full resolution
  (2048x1024) so that the logits are upsampled to them.

Image-level labels use typical class areas measured on source_train as shares of the image (one
pass over its labels, cached as JSON in the benchmark's cache folder, RUN_DIR/data), so that
target labels at their native resolution are judged by the same bar.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from wsda_lib.core.atomic import write_json
from wsda_lib.core.config import check_range
from wsda_lib.data.cityscapes import cityscapes
from wsda_lib.data.files import FileSegmentation
from wsda_lib.data.readers import open_dataset
from wsda_lib.data.splits import Benchmark
from wsda_lib.data.weak_labels import class_pixel_counts, typical_areas


def _slice(ds: FileSegmentation, name: str, pairs, typical=None, fraction=0.1,
           **changes) -> FileSegmentation:
    """A split of `pairs` of reader `ds`. Image and label sizes are compared here, per split:
    a training split leaves a mismatched pair out with a warning; an evaluation split
    (on_size_mismatch="refuse") refuses it, so that no score silently drops an image."""
    return FileSegmentation(name, pairs, ds.protocol, ds.id_source, ds.read_label,
                            changes.get("size", ds.size),
                            resize_labels=changes.get("resize_labels", ds.resize_labels),
                            check_sizes=changes.get("check_sizes", True), typical_area=typical,
                            weak_label_fraction=fraction,
                            on_size_mismatch=changes.get("on_size_mismatch", "leave out"),
                            mark_outside=changes.get("mark_outside", False))


def _typical_area(split: FileSegmentation, cache_dir: Path) -> np.ndarray:
    """Typical class areas (C,) (shares of the image) of a split, cached in cache_dir as JSON
    keyed by its class protocol, id source, size (and whether labels are resized) and label
    files (path, byte size and modification time): a 16- then a 13-class run, a new
    source_size, or a label file rewritten in place each measure the areas again."""
    def stamp(path: Path) -> str:  # a rewritten file under the same name is a new file
        st = path.stat()
        return f"{path} {st.st_size} {st.st_mtime_ns}"

    spec = ["shares-v2", split.class_set.name, split.id_source, str(split.size),
            str(split.resize_labels), *(stamp(lb) for _, lb in split.pairs)]
    key = hashlib.sha256("\n".join(spec).encode()).hexdigest()[:12]
    path = cache_dir / f"typical_area-{key}.json"
    if path.is_file():
        return np.asarray(json.loads(path.read_text(encoding="utf-8")))
    counts, pixels = [], []
    for i in range(len(split)):  # one label at a time: a whole GTA5 split does not fit
        label = split.label(i)
        counts.append(class_pixel_counts(label[None], split.class_set.num_classes))
        pixels.append(label.size)
    typical = typical_areas(np.concatenate(counts), pixels)
    write_json(path, typical.tolist())
    return typical


def load_real(data_cfg, cache_dir) -> Benchmark:
    """The splits above from data_cfg.source_root (data_cfg.dataset) and .target_root.
    Use `wsda_lib.data.load`, which also opens the embedded benchmark."""
    val_count, target_root = data_cfg.val_count, data_cfg.target_root
    check_range("data.val_count", val_count)
    classes = data_cfg.class_protocol
    # Sizes are compared per split (_slice), after the held-out images are chosen.
    source = open_dataset(data_cfg.dataset, data_cfg.source_root, size=data_cfg.source_size,
                          num_classes=classes, check_sizes=False)
    target = cityscapes(target_root, "train", size=data_cfg.target_size, num_classes=classes,
                        check_sizes=False)
    test = cityscapes(target_root, "val", size=data_cfg.target_size, resize_labels=False,
                      num_classes=classes, check_sizes=False)
    for ds in (source, target):
        if len(ds) <= val_count:
            raise ValueError(f"{ds.name}: {len(ds)} images, not more than data.val_count="
                             f"{val_count} to hold out for validation")
    source_train = _slice(source, "source_train", source.pairs[:-val_count])
    typical = _typical_area(source_train, Path(cache_dir))
    f = data_cfg.weak_label_fraction
    # Target evaluation: native labels (logits upsampled to them), every image or an error,
    # and the pixels of classes the protocol drops marked for the official convention.
    evaluation = dict(resize_labels=False, on_size_mismatch="refuse", mark_outside=True)
    splits = {
        "source_train": _slice(source, "source_train", source_train.pairs, typical, f,
                               check_sizes=False),
        "source_val": _slice(source, "source_val", source.pairs[-val_count:], typical, f),
        "target_train": _slice(target, "target_train", target.pairs[:-val_count], typical, f),
        "target_val": _slice(target, "target_val", target.pairs[-val_count:], typical, f,
                             **evaluation),
        "target_test": _slice(test, "target_test", test.pairs, typical, f, **evaluation),
    }
    return Benchmark(splits, source.class_set, typical, Path(cache_dir))
