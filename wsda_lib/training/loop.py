"""The bookkeeping both training loops share (`Loop`): the poly schedule, the progress bar,
the logged history, the validation mIoU along the way, the stop on a non-finite loss, the
resume checkpoint and the stop on a signal, and the wall seconds per phase (`PhaseClock`).
The steps themselves are engine.py's."""

from __future__ import annotations

import signal
import sys
import time
import warnings

import numpy as np
import torch
from tqdm.auto import tqdm

from wsda_lib.core import distributed
from wsda_lib.training.evaluate import eval_loader, evaluate
from wsda_lib.training.resume import StopRequests, rng_state, set_rng_state


def poly_lr(base_lr: float, it: int, max_it: int, power: float) -> float:
    """The poly schedule: base_lr * (1 - it / max_it) ** power."""
    return base_lr * (1 - it / max_it) ** power


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)


class PhaseClock:
    """Wall seconds per phase of a training loop: `clock("forward")` ends the running phase
    and starts "forward"; `clock(None)` ends it. The loops report "data", "forward",
    "backward", "discriminators", "evaluation" and "checkpoint" in history["phase_seconds"],
    which `make bench` sums into the series' profile. On a GPU, work is asynchronous: a phase
    then also holds the queued work it waits for."""

    def __init__(self, seconds: dict | None = None):
        self.seconds = dict(seconds or {})
        self._phase, self._since = None, 0.0

    def __call__(self, phase: str | None) -> None:
        now = time.perf_counter()
        if self._phase is not None:
            self.seconds[self._phase] = self.seconds.get(self._phase, 0.0) + now - self._since
        self._phase, self._since = phase, now


class Loop:
    """What both loops share: the poly schedule, the progress bar, the logged history (means
    over `log_every` steps), the validation mIoU every `eval_every` steps, the stop on a
    non-finite loss, and the resume checkpoint (runs.Resume) every train.checkpoint_every
    steps: `parts` (name -> the model, optimisers, discriminators, data streams, generators)
    are saved with the RNG states, the history and the step, and restored at the start when a
    checkpoint exists, so that a resumed run ends as an uninterrupted one does."""

    def __init__(self, model, optimizer, train_cfg, lr: float, iterations: int, val_set,
                 device, desc: str, progress: bool, log_every: int = 1, resume=None,
                 parts: dict | None = None):
        if iterations < 1:
            raise ValueError(f"{desc}: iterations must be >= 1, got {iterations}")
        if train_cfg.poly_horizon is not None and train_cfg.poly_horizon < iterations:
            raise ValueError(f"train.poly_horizon={train_cfg.poly_horizon} is shorter than the "
                             f"{iterations} iterations of {desc}; the poly schedule would end "
                             f"before training does")
        self.model, self.optimizer, self.device, self.desc = model, optimizer, device, desc
        self.lr, self.iterations, self.log_every = lr, iterations, log_every
        self.horizon, self.power = train_cfg.poly_horizon or iterations, train_cfg.poly_power
        self.eval_every = train_cfg.eval_every
        self.val_loader = eval_loader(val_set, train_cfg.eval_batch_size)
        self.num_classes = val_set.class_set.num_classes
        self.history = {"iteration": [], "val_iteration": [], "val_miou": []}
        self.window: dict[str, list] = {}
        self.resume, self.parts = resume, {"model": model, "optimizer": optimizer,
                                           **(parts or {})}
        self.first, self.elapsed, self.clock = 0, 0.0, PhaseClock()
        self.board = curves_writer(resume, train_cfg)
        saved = resume.load() if resume is not None else None
        if saved is not None:
            self._restore(saved)
        self.bar = tqdm(range(self.first, iterations), desc=desc, mininterval=2,
                        initial=self.first, total=iterations,
                        disable=not progress or not distributed.is_main())
        self.start = time.perf_counter()
        # A signal ends the step under way, writes a resume checkpoint and stops the run.
        self.stops = StopRequests(install=resume is not None)

    def release(self) -> None:
        """Give the signal handlers back and close the curves' file (the run ended, or
        failed)."""
        self.stops.release()
        if self.board is not None:
            self.board.close()
            self.board = None

    def _restore(self, saved: dict) -> None:
        for name, part in self.parts.items():
            if isinstance(part, torch.Generator):
                part.set_state(saved["parts"][name])
            else:
                part.load_state_dict(saved["parts"][name])
        self.history, self.window = saved["history"], saved["window"]
        self.first, self.elapsed = saved["step"], saved["elapsed"]
        self.clock = PhaseClock(saved.get("phase_seconds"))
        set_rng_state(saved["rng"])

    def _save(self, step: int) -> bool:
        """Write the resume checkpoint; if that fails (a full disk), warn and train on: the
        run loses only the chance to resume from this step. Returns whether it was written."""
        parts = {name: part.get_state() if isinstance(part, torch.Generator)
                 else part.state_dict() for name, part in self.parts.items()}
        self.window = host_values(self.window)
        try:
            self.resume.save({"step": step, "parts": parts, "rng": rng_state(),
                              "history": self.history, "window": self.window,
                              "elapsed": self.elapsed + time.perf_counter() - self.start,
                              "phase_seconds": self.clock.seconds})
        except (OSError, RuntimeError) as e:  # torch.save reports a failed write as RuntimeError
            warnings.warn(f"{self.desc}: the resume checkpoint of step {step} could not be "
                          f"written to {self.resume.path} ({type(e).__name__}: {e}); training "
                          f"goes on", stacklevel=2)
            return False
        return True

    def __iter__(self):
        self.clock("data")
        for it in self.bar:
            set_lr(self.optimizer, poly_lr(self.lr, it, self.horizon, self.power))
            yield it

    def check_finite(self, it: int, loss: torch.Tensor, terms: dict) -> None:
        """Stop at once on a non-finite loss, before its step; the error names the stage, the
        step, the term and the resume checkpoint that stays (written before this step). A host
        sync: the optimiser must not take a non-finite step (one per optimiser step)."""
        if bool(torch.isfinite(loss)):
            return
        terms = host_values({k: [v] for k, v in terms.items()})
        terms = {k: v[0] for k, v in terms.items()}
        bad = [k for k, v in terms.items() if not np.all(np.isfinite(v))] or ["total"]
        kept = (f"the last resume checkpoint, {self.resume.path}, is kept"
                if self.resume is not None and self.resume.path.is_file()
                else "no resume checkpoint was written yet")
        raise FloatingPointError(f"{self.desc}: the loss is not finite at step {it + 1} "
                                 f"(term {', '.join(bad)} = "
                                 f"{', '.join(str(terms.get(k, loss.item())) for k in bad)}); "
                                 f"training stopped; {kept}. Look for NaN/inf inputs or a "
                                 f"learning rate that diverges")

    def end_step(self, it: int, loss: torch.Tensor, terms: dict) -> None:
        """Log this step's terms (numbers, or tensors on the device, copied to the host
        together once per log interval); validate (for the learning curve only) when it is
        time; write the resume checkpoint when it is due."""
        for k, v in terms.items():
            self.window.setdefault(k, []).append(v)
        last = it + 1 == self.iterations
        if (it + 1) % self.log_every == 0 or last:
            self.history["iteration"].append(it + 1)
            for k, v in host_values(self.window).items():  # per-class lists: element-wise
                with warnings.catch_warnings():  # a window may lack present/absent pairs
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean = np.nanmean(np.asarray(v, dtype=np.float64), axis=0)
                self.history.setdefault(k, []).append(mean.tolist() if mean.ndim else float(mean))
                if self.board is not None and not mean.ndim:
                    self.board.add_scalar(f"train/{k}", float(mean), it + 1)
            if self.board is not None:
                self.board.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], it + 1)
            self.window = {}
        if (it + 1) % self.eval_every == 0 or last:
            self.clock("evaluation")
            val = evaluate(self.model, self.val_loader, self.num_classes, self.device)
            self.history["val_iteration"].append(it + 1)
            self.history["val_miou"].append(val["miou"])
            if self.board is not None:
                self.board.add_scalar("val/miou", val["miou"], it + 1)
                self.board.flush()  # a run left for the night shows its curve as it goes
            self.bar.set_postfix(loss=f"{loss.item():.3f}", val_miou=f"{val['miou']:.1f}")
        due = self.resume is not None and self.resume.due(it + 1, self.iterations)
        if due:
            self.clock("checkpoint")
            self._save(it + 1)
        if self.stops.handlers and self.stops.agreed(self.device):  # the last step too
            self._stop_here(it + 1, saved=due)
        self.clock("data")  # until the next step's forward pass

    def _stop_here(self, step: int, saved: bool) -> None:
        """Write the resume checkpoint of `step` (unless just written), say so in one line
        and stop: SystemExit(128 + the signal) for SIGTERM, KeyboardInterrupt for SIGINT."""
        signum = self.stops.agreed(self.device)
        if not saved:
            saved = self._save(step)
        self.bar.close()
        self.release()
        if distributed.is_main():
            kept = (f"the resume checkpoint {self.resume.path} holds it: the same command "
                    f"resumes from there" if saved else
                    "its resume checkpoint could not be written (the warning above)")
            print(f"{self.desc}: stopped by {signal.Signals(signum).name} after step {step} of "
                  f"{self.iterations}; {kept}", file=sys.stderr, flush=True)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def finish(self, images_per_step: int) -> dict:
        """The history, with the training time in seconds (summed over resumed sessions)
        and the images per second of the steps this session ran."""
        self.release()
        self.clock(None)
        now = time.perf_counter() - self.start
        steps = self.iterations - self.first
        return {**self.history, "seconds": self.elapsed + now,
                "images_per_second": steps * images_per_step / now if now > 0 else 0.0,
                "phase_seconds": self.clock.seconds}


def host_values(window: dict[str, list]) -> dict[str, list]:
    """`window` ({name: [value per step]}) with every tensor value (0-d, or 1-d per class)
    replaced by its Python number or list, all copied from the device in one transfer: the
    loop's logging costs one host sync per log interval, not one per term and step."""
    tensors = [v for values in window.values() for v in values if torch.is_tensor(v)]
    if not tensors:
        return window
    flat = iter(torch.cat([v.detach().float().reshape(-1) for v in tensors]).cpu().tolist())

    def host(v):
        if not torch.is_tensor(v):
            return v
        numbers = [next(flat) for _ in range(v.numel())]
        return numbers if v.dim() else numbers[0]

    return {k: [host(v) for v in values] for k, values in window.items()}


TENSORBOARD_DIR = "tensorboard"


def curves_writer(resume, train_cfg):
    """A TensorBoard SummaryWriter into the run's own directory (beside its resume
    checkpoint: <run dir>/tensorboard, so one per run key) when train_cfg.tensorboard is on
    and the run has a directory; on rank 0 only. None otherwise. A resumed run appends to
    the same events (TensorBoard shows the later value of a repeated step)."""
    if not train_cfg.tensorboard or resume is None or not distributed.is_main():
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(resume.path.parent / TENSORBOARD_DIR))
