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

from ..atomic import write_json
from .cityscapes import cityscapes
from .files import FileSegmentation
from .readers import open_dataset
from .splits import Benchmark
from .weak_labels import class_pixel_counts, typical_areas


def _slice(ds: FileSegmentation, name: str, pairs, typical=None, fraction=0.1,
           **changes) -> FileSegmentation:
    return FileSegmentation(name, pairs, ds.protocol, ds.id_source, ds.read_label,
                            changes.get("size", ds.size),
                            resize_labels=changes.get("resize_labels", ds.resize_labels),
                            check_sizes=False, typical_area=typical,
                            weak_label_fraction=fraction)


def _typical_area(split: FileSegmentation, cache_dir: Path) -> np.ndarray:
    """Typical class areas (shares of the image) of a split, cached in cache_dir by its class
    protocol, size and file list."""
    spec = ["shares", split.class_set.name, str(split.size),
            *(str(lb) for _, lb in split.pairs)]
    key = hashlib.sha256("\n".join(spec).encode()).hexdigest()[:12]
    path = cache_dir / f"typical_area-{key}.json"
    if path.is_file():
        return np.asarray(json.loads(path.read_text()))
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
    if type(val_count) is not int or val_count < 1:
        raise ValueError(f"data.val_count must be a whole number >= 1, got {val_count!r}")
    classes = data_cfg.class_protocol
    source = open_dataset(data_cfg.dataset, data_cfg.source_root, size=data_cfg.source_size,
                          num_classes=classes)
    target = cityscapes(target_root, "train", size=data_cfg.target_size, num_classes=classes)
    test = cityscapes(target_root, "val", size=data_cfg.target_size, resize_labels=False,
                      num_classes=classes)
    for ds in (source, target):
        if len(ds) <= val_count:
            raise ValueError(f"{ds.name}: {len(ds)} images, not more than data.val_count="
                             f"{val_count} to hold out for validation")
    typical = _typical_area(_slice(source, "source_train", source.pairs[:-val_count]),
                            Path(cache_dir))
    f = data_cfg.weak_label_fraction
    splits = {
        "source_train": _slice(source, "source_train", source.pairs[:-val_count], typical, f),
        "source_val": _slice(source, "source_val", source.pairs[-val_count:], typical, f),
        "target_train": _slice(target, "target_train", target.pairs[:-val_count], typical, f),
        "target_val": _slice(target, "target_val", target.pairs[-val_count:], typical, f,
                             resize_labels=False),
        "target_test": _slice(test, "target_test", test.pairs, typical, f),
    }
    return Benchmark(splits, source.class_set, typical, Path(cache_dir))
