"""The embedded benchmark as datasets: generated once, cached on disk, loaded by config.

Every split is a `SegmentationSplit`, the interface the real-data readers share: item i is
{"image": (3, H, W) float in [0, 1], "label": (H, W) int64 with 255 = ignore, "name": str,
"index": int (position in the split), "weak_label": (C,) float 0/1 image-level labels}.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from . import synthetic
from .classes import EMBEDDED, ClassSet
from .weak_labels import class_pixel_counts, image_labels, typical_areas


class SegmentationSplit(Dataset):
    """In-memory images (N, H, W, 3) uint8 and labels (N, H, W) uint8 of one split."""

    def __init__(self, name: str, images: np.ndarray, labels: np.ndarray, class_set: ClassSet,
                 weak_labels: np.ndarray):
        if images.shape[:3] != labels.shape or images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"split {name!r}: images {images.shape} and labels {labels.shape} "
                             f"do not match; expected (N, H, W, 3) and (N, H, W)")
        self.name, self.images, self.labels = name, images, labels
        self.class_set = class_set
        self.weak_labels = weak_labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {
            "image": torch.from_numpy(self.images[i]).permute(2, 0, 1).float() / 255,
            "label": torch.from_numpy(self.labels[i].astype(np.int64)),
            "name": f"{self.name}/{i:05d}",
            "index": i,
            "weak_label": torch.from_numpy(self.weak_labels[i]),
        }


@dataclass
class Benchmark:
    splits: dict[str, SegmentationSplit]
    class_set: ClassSet
    typical_area: np.ndarray   # (C,) median pixels per present class, from source_train
    cache_dir: Path

    def __getitem__(self, split: str) -> SegmentationSplit:
        if split not in self.splits:
            raise KeyError(f"no split {split!r}; expected one of {sorted(self.splits)}")
        return self.splits[split]


def _cache_dir(root: Path, data_cfg) -> Path:
    spec = {"version": synthetic.GENERATOR_VERSION, "height": data_cfg.height,
            "width": data_cfg.width, "seed": data_cfg.seed, "sizes": dict(data_cfg.sizes)}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return root / f"embedded-{key}"


def _save_npz(path: Path, **arrays):
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_npz(path: Path):
    try:
        with np.load(path) as z:
            return z["images"], z["labels"]
    except Exception as e:
        raise ValueError(f"cached split {path} is unreadable ({type(e).__name__}: {e}); "
                         f"delete it and it will be generated again") from e


def load_benchmark(data_cfg, cache_root: str | Path, verbose: bool = True) -> Benchmark:
    """Generate (first time) or load (afterwards) every split of the embedded benchmark."""
    if data_cfg.dataset != "embedded":
        raise ValueError(f"data.dataset={data_cfg.dataset!r}: only 'embedded' is available")
    unknown = set(data_cfg.sizes) - set(synthetic.SPLITS)
    if unknown:
        raise ValueError(f"data.sizes names unknown splits {sorted(unknown)}; "
                         f"expected {sorted(synthetic.SPLITS)}")
    directory = _cache_dir(Path(cache_root), data_cfg)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in data_cfg.sizes.items():
        path = directory / f"{split}.npz"
        if not path.exists():
            if verbose:
                print(f"generating {split}: {n} images -> {path}")
            images, labels = synthetic.generate_split(split, n, data_cfg.seed,
                                                      data_cfg.height, data_cfg.width)
            _save_npz(path, images=images, labels=labels)
        arrays[split] = _load_npz(path)
    counts = {s: class_pixel_counts(lb, EMBEDDED.num_classes) for s, (_, lb) in arrays.items()}
    typical = typical_areas(counts["source_train"])
    splits = {s: SegmentationSplit(s, im, lb, EMBEDDED,
                                   image_labels(counts[s], typical, data_cfg.weak_label_fraction))
              for s, (im, lb) in arrays.items()}
    return Benchmark(splits, EMBEDDED, typical, directory)


def datasheet(benchmark: Benchmark) -> dict:
    """Per-domain class statistics: pixel frequency (% of labelled pixels) and presence rate
    (% of images whose weak label has the class), from the train splits."""
    sheet = {"classes": list(benchmark.class_set.names)}
    for domain in ("source", "target"):
        split = benchmark[f"{domain}_train"]
        counts = class_pixel_counts(split.labels, benchmark.class_set.num_classes)
        sheet[domain] = {
            "pixel_frequency": (100 * counts.sum(0) / max(counts.sum(), 1)).tolist(),
            "presence_rate": (100 * split.weak_labels.mean(0)).tolist(),
            "classes_per_image": float(split.weak_labels.sum(1).mean()),
        }
    return sheet
