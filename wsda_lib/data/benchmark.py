"""The embedded benchmark as datasets: generated once, cached on disk, loaded by config.

Every split is an `InMemorySplit` (splits.py), the protocol the real-data readers share.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from wsda_lib.core.atomic import atomic_write
from wsda_lib.data import synthetic
from wsda_lib.data.classes import EMBEDDED
from wsda_lib.data.splits import Benchmark, InMemorySplit
from wsda_lib.data.weak_labels import class_pixel_counts, typical_areas


def _cache_dir(root: Path, data_cfg, doms) -> Path:
    spec = {"version": synthetic.fingerprint(doms), "height": data_cfg.height,
            "width": data_cfg.width, "seed": data_cfg.seed, "sizes": dict(data_cfg.sizes)}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return root / f"embedded-{key}"


def _save_npz(path: Path, **arrays):
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def _load_npz(path: Path):
    try:
        with np.load(path) as z:
            return z["images"], z["labels"]
    except Exception as e:
        raise ValueError(f"cached split {path} is unreadable ({type(e).__name__}: {e}); "
                         f"delete it and it will be generated again") from e


def load_embedded(data_cfg, cache_root: str | Path, verbose: bool = True,
                  variant: str = synthetic.CALIBRATED) -> Benchmark:
    """Generate (first time) or load (afterwards) every split of the embedded benchmark, or
    of another of its calibration variants (synthetic.VARIANTS; the calibration reads them).
    Use `wsda_lib.data.load`, which also opens the real datasets."""
    if data_cfg.dataset != "embedded":
        raise ValueError(f"data.dataset={data_cfg.dataset!r}: only 'embedded' is available")
    unknown = set(data_cfg.sizes) - set(synthetic.SPLITS)
    if unknown:
        raise ValueError(f"data.sizes names unknown splits {sorted(unknown)}; "
                         f"expected {sorted(synthetic.SPLITS)}")
    doms = synthetic.domains(variant)
    directory = _cache_dir(Path(cache_root), data_cfg, doms)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in data_cfg.sizes.items():
        path = directory / f"{split}.npz"
        if not path.exists():
            if verbose:
                print(f"generating {split}: {n} images -> {path}")
            images, labels = synthetic.generate_split(split, n, data_cfg.seed,
                                                      data_cfg.height, data_cfg.width, doms)
            _save_npz(path, images=images, labels=labels)
        arrays[split] = _load_npz(path)
    source_labels = arrays["source_train"][1]
    typical = typical_areas(class_pixel_counts(source_labels, EMBEDDED.num_classes),
                            source_labels[0].size)
    splits = {s: InMemorySplit(s, im, lb, EMBEDDED, typical, data_cfg.weak_label_fraction)
              for s, (im, lb) in arrays.items()}
    return Benchmark(splits, EMBEDDED, typical, directory, synthetic.fingerprint(doms))


def datasheet(benchmark: Benchmark) -> dict:
    """Per-domain class statistics: pixel frequency (% of labelled pixels) and presence rate
    (% of images whose weak label has the class), from the train splits."""
    sheet = {"classes": list(benchmark.class_set.names)}
    for domain in ("source", "target"):
        split = benchmark[f"{domain}_train"]
        counts = class_pixel_counts(split.labels_array(), benchmark.class_set.num_classes)
        sheet[domain] = {
            "pixel_frequency": (100 * counts.sum(0) / max(counts.sum(), 1)).tolist(),
            "presence_rate": (100 * split.weak_labels.mean(0)).tolist(),
            "classes_per_image": float(split.weak_labels.sum(1).mean()),
        }
    return sheet
