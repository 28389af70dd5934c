"""Datasets: the embedded two-domain benchmark and readers for GTA5, SYNTHIA and Cityscapes,
behind one entry point, `load`, and one split protocol (splits.py)."""

from __future__ import annotations

from pathlib import Path

from wsda_lib.data.benchmark import load_embedded
from wsda_lib.data.folders import load_folders
from wsda_lib.data.readers import open_dataset
from wsda_lib.data.real import load_real
from wsda_lib.data.splits import SPLIT_NAMES, Benchmark, Split

__all__ = ["SPLIT_NAMES", "Benchmark", "Split", "load", "open_dataset"]


def load(data_cfg, cache_dir: str | Path, verbose: bool = True) -> Benchmark:
    """The five splits of the experiment that `data_cfg` (config.DataConfig) describes.

    data.dataset = "embedded": the embedded benchmark, generated once into cache_dir.
    "gta5" or "synthia": that source with Cityscapes (data.target_root) as the target, in the
    class protocol data.class_protocol (19, 16 or 13). "folders": any two domains in folders
    (data.source_root, data.target_root) with a class file (folders.py). Errors name the
    config field or the file.
    """
    defaults = {"classes": None, "image_labels": None, "points": None, "img_suffix": None,
                "seg_map_suffix": ".png"}
    for name, default in defaults.items():
        if getattr(data_cfg, name) != default and data_cfg.dataset != "folders":
            raise ValueError(f"data.{name}={getattr(data_cfg, name)!r} is read for "
                             f"data.dataset='folders' only; {data_cfg.dataset!r} has its own "
                             f"{'classes' if name == 'classes' else 'files'}")
    if data_cfg.dataset == "embedded":
        roots = [f"data.{k}" for k in ("source_root", "target_root") if getattr(data_cfg, k)]
        if roots:  # they would be ignored: the run would train on the generated benchmark
            raise ValueError(f"{' and '.join(roots)} name folders of real data, but "
                             f"data.dataset='embedded' generates its own; choose a paper "
                             f"preset (--preset paper_gta5) or leave them unset")
        if data_cfg.class_protocol is not None:
            raise ValueError(f"data.class_protocol={data_cfg.class_protocol!r}: the embedded "
                             f"benchmark has its own ten classes; leave it None")
        return load_embedded(data_cfg, cache_dir, verbose=verbose)
    if data_cfg.dataset == "folders":
        return load_folders(data_cfg, cache_dir)
    if data_cfg.dataset not in ("gta5", "synthia"):
        raise ValueError(f"data.dataset={data_cfg.dataset!r}: expected 'embedded', 'gta5', "
                         f"'synthia' or 'folders'")
    if not (data_cfg.source_root and data_cfg.target_root):
        raise ValueError(f"data.dataset={data_cfg.dataset!r} needs data.source_root (GTA5 or "
                         f"SYNTHIA; --source-root) and data.target_root (Cityscapes; "
                         f"--target-root)")
    if data_cfg.class_protocol not in (19, 16, 13):
        raise ValueError(f"data.class_protocol must be 19, 16 or 13 for the real datasets, "
                         f"got {data_cfg.class_protocol!r}")
    return load_real(data_cfg, Path(cache_dir))
