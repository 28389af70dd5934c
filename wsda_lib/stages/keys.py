"""What keys a stage's run directory (`run_config`): the stage, the seed, its resolved config,
and what the data were (the embedded benchmark's fingerprint, a digest of the files a real
or folder dataset reads), so that a cached run is reused only for the very same run."""

from __future__ import annotations

import hashlib
from pathlib import Path

from wsda_lib.core import distributed
from wsda_lib.core.config import Config, key_config
from wsda_lib.data import SPLIT_NAMES, synthetic
from wsda_lib.stages.registry import stage, stage_config


def run_config(name: str, cfg: Config, seed: int, benchmark=None) -> dict:
    """What keys stage `name`'s run directory: the stage, the seed, its resolved config
    as config.key_config gives it (without the adaptation section for a supervised stage,
    which does not read it), on the embedded benchmark the fingerprint of its generator and
    parameters (of `benchmark`, a loaded one, or else of the calibrated benchmark), and,
    under torchrun, the number of processes, which multiplies the effective batch. Raises
    ValueError for an embedded benchmark without a fingerprint."""
    resolved = stage_config(name, cfg)
    config = {"stage": name, "seed": seed, **key_config(resolved)}
    if stage(name).start_from is None or stage(name).statistics_only:  # reads no adapt field
        del config["adapt"]
    elif resolved.adapt.self_training:  # against fixed values, whatever their defaults
        for field_name, reference in SELF_TRAINING_REFERENCE.items():
            value = getattr(resolved.adapt, field_name)
            if field_name in SELF_TRAINING_KEYED_AS or value != reference:
                config["adapt"][field_name] = value
            else:
                config["adapt"].pop(field_name, None)
    else:  # the self-training fields change nothing here
        for field_name in SELF_TRAINING_REFERENCE:
            config["adapt"].pop(field_name, None)
        config["adapt"].update(SELF_TRAINING_KEYED_AS)
    if cfg.data.dataset == "embedded":  # runs on older images of the benchmark are not reused
        if benchmark is not None and not getattr(benchmark, "fingerprint", None):
            raise ValueError(f"stage {name!r}: the embedded benchmark given has no fingerprint "
                             f"of its generator's parameters; load it with data.load, which "
                             f"sets one, so that its runs are keyed by the images they saw")
        config["benchmark"] = (synthetic.fingerprint(synthetic.DOMAINS) if benchmark is None
                               else benchmark.fingerprint)
    if cfg.data.dataset == "folders":  # an edited class file or CSV is another run
        config["files"] = folder_files_digest(cfg.data)
        if stage(name).start_from is None:  # supervised: target train's CSVs are not read
            for field_name in ("image_labels", "points"):
                config["data"].pop(field_name, None)
                config["files"].pop(field_name, None)
    if cfg.data.dataset != "embedded" and benchmark is not None:  # files changed in place
        if getattr(benchmark, "data_files", None) is None:  # once per loaded benchmark
            benchmark.data_files = data_files_digest(benchmark, cfg.data)
        config["data_files"] = benchmark.data_files
    if distributed.world_size() > 1:  # a single process keeps the keys runs always had
        config["world_size"] = distributed.world_size()
    return config


def data_files_digest(benchmark, data_cfg) -> str:
    """A digest of every file the benchmark's splits read (images, labels, and the
    translated source images of adapt.translated_source_dir are keyed by their own folder):
    each file's path relative to its dataset root, size and modification time. Part of the
    key of a run on files (folders and the real datasets), so that an image or a label
    changed in place is another run, never a cached one served for data that changed."""
    roots = [Path(r).resolve() for r in (data_cfg.source_root, data_cfg.target_root) if r]
    files = set()
    for name in SPLIT_NAMES:
        for pair in getattr(benchmark[name], "pairs", []):
            files.update(Path(p).resolve() for p in pair if p is not None)
    h = hashlib.sha256()
    for path in sorted(files):
        shown = next((str(path.relative_to(r)) for r in roots if path.is_relative_to(r)),
                     path.name)
        st = path.stat()
        h.update(f"{shown}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


# The adaptation fields only self-training reads, with the values they had when this rule was
# written (2026-12). A stage that does not self-train is keyed with those that keys always
# held (SELF_TRAINING_KEYED_AS) at these values, whatever the config says, so that neither an
# override for a self-training stage nor a change of their defaults retrains the stages it
# starts from. A stage that self-trains is keyed with those at their values, and with the
# others only where they differ from these values (not from the defaults): a change of a
# default re-keys no cached run and never lets a run of the old default stand for the new.
SELF_TRAINING_REFERENCE = {"lambda_st": 1.0, "st_quantile": 0.5, "st_cap": 0.9,
                           "st_label_statistics": "running", "st_augment": False}
SELF_TRAINING_FIELDS = tuple(SELF_TRAINING_REFERENCE)
SELF_TRAINING_KEYED_AS = {k: SELF_TRAINING_REFERENCE[k] for k in ("lambda_st", "st_quantile",
                                                                   "st_cap")}


def folder_files_digest(data_cfg) -> dict:
    """{field: sha256 of the file's bytes} of the class file and the CSVs a folder dataset's
    config names (data.classes, or target_root/classes.json; data.image_labels; data.points):
    part of a run's key, as the files decide what it trains on."""
    from wsda_lib.data.folders import CLASS_FILE, READY_MADE
    classes = data_cfg.classes or str(Path(data_cfg.target_root or ".") / CLASS_FILE)
    named = {"classes": classes, "image_labels": data_cfg.image_labels,
             "points": data_cfg.points}
    return {k: hashlib.sha256(Path(v).read_bytes()).hexdigest()[:16] if v not in READY_MADE
            else v for k, v in named.items() if v and (v in READY_MADE or Path(v).is_file())}


def pseudo_label_key(cfg: Config) -> dict:
    """The config part of the key of self-training's pseudo-label folder
    (training.pseudo_labels.pseudo_label_folder): config.key_config, and the BatchNorm
    statistics the labels are made with (adapt.st_label_statistics) whatever its default,
    since key_config leaves out a field at its default and a default can change: labels made
    with running statistics are never reused for a round that makes them with target statistics."""
    return {**key_config(cfg), "st_label_statistics": cfg.adapt.st_label_statistics}
