"""Run directories: one per stage, keyed by the stage's resolved config.

"Load if present, otherwise train": `load_or_train` returns the saved checkpoint and metrics
when a finished run with the same config exists, and trains (then saves) otherwise. A run in
progress writes a resume checkpoint every `every` steps (train.checkpoint_every); starting
the same run again, from the CLI or a notebook alike, resumes from it and ends with the same
weights and metrics as an uninterrupted run. Every file is written atomically (a temporary
file renamed into place, atomic.py), so a killed run leaves no half-written file behind, and
checkpoints load with `weights_only=True`.

Layout: <root>/<stage>-<key>/{checkpoint.pt, metrics.json, config.json}, and resume.pt while
the run is in progress. config.json is written last and marks the run as finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from wsda_lib.core import distributed

try:
    import fcntl
except ImportError:  # Windows: runs are not locked
    fcntl = None
from wsda_lib.core.atomic import atomic_write, numbers, remove_stale_temporaries, write_json

__all__ = ["Resume", "Run", "RunError", "config_key", "load_checkpoint", "load_or_train",
           "read_json", "run_dir", "save_checkpoint", "write_json"]


class RunError(ValueError):
    """A run directory that cannot be used as it is; the message says what to delete."""


def config_key(config: dict) -> str:
    """A short, stable hash of a JSON-ready config."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def read_json(path: str | Path):
    """The JSON in `path`, with the nulls of numeric lists back to NaN (atomic.numbers: a
    per-class score written as null); errors name the file."""
    path = Path(path)
    try:
        return numbers(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


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
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):  # torch's words for a refused object
            raise ValueError(f"checkpoint {path} holds pickled Python objects besides tensors "
                             f"(e.g. numpy values), which wsda does not load (they can run "
                             f"code); re-save it with only the state dict's tensors and plain "
                             f"numbers") from None
        raise ValueError(f"checkpoint {path} could not be loaded (UnpicklingError: "
                         f"{(str(e).splitlines() or [''])[0]}); it may be truncated or not a wsda "
                         f"checkpoint") from None
    except Exception as e:
        raise ValueError(f"checkpoint {path} could not be loaded ({type(e).__name__}: {e}); "
                         f"it may be truncated or not a wsda checkpoint") from e


@dataclass
class Run:
    dir: Path
    state: dict         # what the trainer saved: model weights and anything else
    metrics: dict
    loaded: bool        # True when it came from disk rather than fresh training


@dataclass
class Resume:
    """Where a run in progress keeps its resume checkpoint, and every how many steps it
    writes one (None: never). The training loops (training.loop.Loop) call `load` once
    at their start and `save` when `due`."""

    path: Path
    every: int | None
    config: dict | None = None   # the run's config, stored with the state and checked

    def due(self, step: int, last: int) -> bool:
        """Whether to save after `step` steps (1-based) of `last`: every `every` steps, but
        not after the last one, which the finished run's checkpoint records."""
        return bool(self.every) and step % self.every == 0 and step < last

    def load(self) -> dict | None:
        """The saved state, or None when there is none to resume from."""
        if not self.path.is_file():
            return None
        try:
            saved = load_checkpoint(self.path)
        except ValueError as e:
            raise RunError(f"{e}. Delete {self.path} to train this run from its start") from e
        if self.config is not None and saved.get("config") != self.config:
            raise RunError(f"{self.path}: a resume checkpoint of another config (an edited "
                           f"or moved file); delete it to train this run from its start")
        return saved

    def save(self, state: dict) -> None:
        if distributed.is_main():  # under torchrun every rank holds the same state
            save_checkpoint(self.path, {**state, "config": self.config})

    def clear(self) -> None:
        if distributed.is_main():
            self.path.unlink(missing_ok=True)


def run_dir(root: str | Path, stage: str, config: dict) -> Path:
    return Path(root) / f"{stage}-{config_key(config)}"


def fallback_path(directory: Path) -> Path:
    """Where `load_or_train` saves a trained run whose own folder cannot be written."""
    return Path(tempfile.gettempdir()) / f"wsda-unsaved-{directory.name}.pt"


def check_writable(root: str | Path, need_bytes: int = 0) -> None:
    """Errors, before any training, when runs cannot be saved under `root`: it cannot be
    created or written, or has less than `need_bytes` free. The message names the folder."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as e:
        raise RunError(f"run directory {root} cannot be written ({type(e).__name__}: "
                       f"{e.strerror or e}); choose another --run-dir") from None
    free = shutil.disk_usage(root).free
    if free < need_bytes:
        raise RunError(f"run directory {root} has {free / 2**20:.0f} MiB free; saving this "
                       f"run needs about {need_bytes / 2**20:.0f} MiB. Free space or choose "
                       f"another --run-dir")


def load_or_train(root: str | Path, stage: str, config: dict,
                  train: Callable[[Resume], tuple[dict, dict]],
                  checkpoint_every: int | None = None) -> Run:
    """Return the finished run of `stage` with this config, or call `train(resume)` ->
    (state, metrics), save both with the config, and return them. `resume` (a `Resume` in
    the run's folder, saving every `checkpoint_every` steps) lets the trainer continue an
    interrupted run. If the folder cannot be written at the end, the state and metrics go
    to `fallback_path` and the error names it."""
    config = json.loads(json.dumps(config))  # the form it takes on disk: tuples become lists
    directory = run_dir(root, stage, config)
    if (directory / "config.json").is_file():
        return _finished(directory, config)
    with training_lock(directory):
        if (directory / "config.json").is_file():  # finished just before the lock was taken
            return _finished(directory, config)
        return _train(directory, config, train, checkpoint_every)


def _finished(directory: Path, config: dict) -> Run:
    """The finished run in `directory`, checked against `config`; RunError names a damaged
    one and the folder to delete."""
    config_path = directory / "config.json"
    try:
        saved = read_json(config_path)
        if saved != config:
            raise ValueError(f"{config_path}: holds a different config than the one asked "
                             f"for (a hash collision or an edited file)")
        run = Run(directory, load_checkpoint(directory / "checkpoint.pt"),
                  read_json(directory / "metrics.json"), loaded=True)
    except (FileNotFoundError, ValueError) as e:
        raise RunError(f"finished run {directory} is damaged: {e}. Delete the folder "
                       f"{directory} to train it again") from None
    Resume(directory / "resume.pt", None).clear()  # left if a kill came before the end
    return run


@contextmanager
def training_lock(directory: Path):
    """Held while this process trains the run in `directory` (rank 0 under torchrun): an
    exclusive flock of a file beside the folder, which names the holder. A second process
    asked for the same run while one trains it gets a RunError naming the other, instead of
    doing the work twice with one result silently winning. Where flock is not available or
    refused, and under torchrun (a refusal on rank 0 alone would leave the other ranks
    waiting in a collective), nothing is locked."""
    if fcntl is None or distributed.world_size() > 1:
        yield
        return
    path = directory.parent / f".{directory.name}.training"
    path.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o666), "r+", encoding="utf-8") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = f.read().strip() or "another process"
            raise RunError(f"run {directory} is being trained by {holder} now; wait for it "
                           f"to end (the same command then loads it) or stop it") from None
        except OSError:  # a file system without flock: train unlocked
            yield
            return
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {socket.gethostname()}, since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        try:
            yield
        finally:  # a process that opened the file meanwhile finds the run finished
            path.unlink(missing_ok=True)
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _train(directory: Path, config: dict, train, checkpoint_every) -> Run:
    """Train the run of `config` into `directory` (load_or_train)."""
    ckpt, metrics_path, config_path = (directory / "checkpoint.pt", directory / "metrics.json",
                                       directory / "config.json")
    if directory.is_dir() and distributed.is_main():
        remove_stale_temporaries(directory)
    resume = Resume(directory / "resume.pt", checkpoint_every, config)
    state, metrics = train(resume)
    if distributed.is_main():  # under torchrun every rank trains; rank 0 alone writes
        try:
            save_checkpoint(ckpt, state)
            write_json(metrics_path, metrics)
            write_json(config_path, config)
        except (OSError, RuntimeError) as e:  # torch.save reports a failed write (a full
            fallback = fallback_path(directory)  # disk) as RuntimeError
            try:
                save_checkpoint(fallback, {**state, "metrics": metrics, "config": config})
                where = f"the trained run is saved at {fallback}"
            except (OSError, RuntimeError) as e2:
                where = f"nor could it be saved at {fallback} ({e2})"
            raise RunError(f"run {directory} could not be saved ({type(e).__name__}: {e}); "
                           f"{where}") from e
        resume.clear()
    distributed.barrier()
    return Run(directory, state, metrics, loaded=False)
