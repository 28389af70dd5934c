"""Run directories: one per stage, keyed by the stage's resolved config.

"Load if present, otherwise train": `load_or_train` returns the saved checkpoint and metrics
when a finished run with the same config exists, and trains (then saves) otherwise. Every
file is written atomically (a temporary file renamed into place), so an interrupted run
leaves no half-written checkpoint behind, and checkpoints load with `weights_only=True`.

Layout: <root>/<stage>-<key>/{checkpoint.pt, metrics.json, config.json}. config.json is
written last and marks the run as finished.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from . import distributed
from .atomic import atomic_write, write_json  # noqa: F401 (notebooks use runs.write_json)


def config_key(config: dict) -> str:
    """A short, stable hash of a JSON-ready config."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def read_json(path: str | Path):
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); delete it to recompute") from e


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Atomically save a dict of tensors and plain values."""
    atomic_write(Path(path), lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint with weights_only=True; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"checkpoint {path} could not be loaded ({type(e).__name__}: {e}); "
                         f"it may be truncated or not a wsda checkpoint") from e


@dataclass
class Run:
    dir: Path
    state: dict         # what the trainer saved: model weights and anything else
    metrics: dict
    loaded: bool        # True when it came from disk rather than fresh training


def run_dir(root: str | Path, stage: str, config: dict) -> Path:
    return Path(root) / f"{stage}-{config_key(config)}"


def load_or_train(root: str | Path, stage: str, config: dict,
                  train: Callable[[], tuple[dict, dict]]) -> Run:
    """Return the finished run of `stage` with this config, or call `train()` -> (state,
    metrics), save both with the config, and return them."""
    config = json.loads(json.dumps(config))  # the form it takes on disk: tuples become lists
    directory = run_dir(root, stage, config)
    ckpt, metrics_path, config_path = (directory / "checkpoint.pt", directory / "metrics.json",
                                       directory / "config.json")
    if config_path.is_file():
        saved = read_json(config_path)
        if saved != config:
            raise ValueError(f"{config_path}: holds a different config than the one asked for "
                             f"(a hash collision or an edited file); move the folder away")
        return Run(directory, load_checkpoint(ckpt), read_json(metrics_path), loaded=True)
    state, metrics = train()
    if distributed.is_main():  # under torchrun every rank trains; rank 0 alone writes
        save_checkpoint(ckpt, state)
        write_json(metrics_path, metrics)
        write_json(config_path, config)
    distributed.barrier()
    return Run(directory, state, metrics, loaded=False)
