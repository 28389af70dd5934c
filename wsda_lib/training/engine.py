"""The training loops: plain, seeded, readable top to bottom.

`train_supervised` trains a segmentation network on one labelled split: the source-only stage
(L_seg on labelled source, docs/method.md §7) and, pointed at the target's labels, the oracle.
`train_adaptation` adapts a source-trained network to the target with the objective of
method/objective.py, in the paper's order: source and target forward passes, the generator
loss and step, then the discriminator loss and step. Which terms are on is the config's
(AdaptConfig); nothing here re-decides it.

Model selection never looks at target labels: a loop runs a fixed number of iterations and
keeps the final weights; a val split is evaluated along the way only to draw learning curves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import signal
import sys
import threading
import time
import warnings

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DistributedSampler, RandomSampler, default_collate
from tqdm.auto import tqdm

from wsda_lib.core import distributed
from wsda_lib.core.config import check_switches
from wsda_lib.core.device import set_seed
from wsda_lib.method.objective import (
    Discriminators,
    LossWeights,
    discriminator_loss,
    generator_loss,
    segmentation_loss,
)
from wsda_lib.method.pixel_adaptation import colour_jitter, restyle_source
from wsda_lib.method.weak_classification import Pooling, image_class_scores
from wsda_lib.training.evaluate import eval_loader, evaluate, presence_precision_recall

# The signals after which a run with a resume checkpoint stops at the end of its step, saved.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class BatchStream:
    """An endless stream of shuffled training batches, moved to `device`; the order depends
    on `seed` only. Incomplete last batches are dropped (BatchNorm dislikes batches of 1).
    Under torchrun each rank draws its own disjoint share of every epoch.

    The batches are those of DataLoader(dataset, batch_size, shuffle=True, drop_last=True,
    generator=torch.Generator().manual_seed(seed)) epoch after epoch, the random draws
    included, but the stream knows its position: `state_dict()` -> {"epoch", "position",
    "generator"} and `load_state_dict` resume it at the same batch without reading the
    images it skips (a resumed run sees the data an uninterrupted one would)."""

    def __init__(self, dataset, batch_size: int, seed: int, device):
        if len(dataset) < batch_size * distributed.world_size():
            raise ValueError(f"split {getattr(dataset, 'name', '?')!r} has {len(dataset)} "
                             f"images, fewer than batch_size={batch_size} x "
                             f"{distributed.world_size()} process(es)")
        self.dataset, self.device = dataset, device
        if distributed.is_distributed():
            self.generator = None
            self.sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True)
        else:
            self.generator = torch.Generator().manual_seed(seed)
            self.sampler = RandomSampler(dataset, generator=self.generator)
        self.batch_sampler = BatchSampler(self.sampler, batch_size, drop_last=True)
        self.epoch, self.position, self._indices, self._epoch_start = 0, 0, None, None

    def _start_epoch(self, draw_seed: bool = True) -> None:
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(self.epoch)
        if self.generator is not None:
            self._epoch_start = self.generator.get_state()
        if draw_seed:  # the DataLoader draws its workers' base seed at every epoch's start
            torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        self._indices = iter(self.batch_sampler)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._indices is None:
            self._start_epoch()
        indices = next(self._indices, None)
        if indices is None:
            self.epoch, self.position = self.epoch + 1, 0
            self._start_epoch()
            indices = next(self._indices)
        self.position += 1
        batch = default_collate([self.dataset[i] for i in indices])
        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "generator": self._epoch_start}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        if self.generator is not None and state["generator"] is not None:
            self.generator.set_state(state["generator"])
            self._start_epoch()
        else:  # the global RNG's draw is part of the restored RNG state
            self._start_epoch(draw_seed=False)
        for _ in range(self.position):  # indices only: no image is read
            next(self._indices)


def batches(dataset, batch_size: int, seed: int, device) -> BatchStream:
    """The training stream of `dataset` (BatchStream)."""
    return BatchStream(dataset, batch_size, seed, device)


def rng_state() -> dict:
    """The state of every global random generator: Python, NumPy, torch's CPU generator and
    the current GPU's (under torchrun each rank's own device, whose state equals rank 0's:
    every device is seeded alike and each rank draws the same sequence on its own)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` returned."""
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def memory_format(train_cfg) -> torch.memory_format:
    """torch.channels_last when train_cfg.channels_last, else torch.contiguous_format."""
    return torch.channels_last if train_cfg.channels_last else torch.contiguous_format


def autocast(train_cfg, device):
    """The context a training step's forward passes and losses run in: torch.autocast in
    bfloat16 for train_cfg.precision == "bf16"; for "fp32" no context at all (older torch
    refuses even a disabled autocast on some devices, such as "mps")."""
    if train_cfg.precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def make_optimizer(model, train_cfg):
    groups = model.parameter_groups(train_cfg.lr, train_cfg.head_lr_mult)
    # foreach: one batched update over all tensors instead of a Python loop over them; the
    # same arithmetic (bit-identical weights, checked), ~3 ms less per adaptation step on a CPU
    if train_cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=train_cfg.lr, momentum=train_cfg.momentum,
                               weight_decay=train_cfg.weight_decay, foreach=True)
    if train_cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=train_cfg.lr, betas=(train_cfg.momentum, 0.99),
                                weight_decay=train_cfg.weight_decay, foreach=True)
    raise ValueError(f"train.optimizer must be 'sgd' or 'adam', got {train_cfg.optimizer!r}")


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


class _Loop:
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
        saved = resume.load() if resume is not None else None
        if saved is not None:
            self._restore(saved)
        self.bar = tqdm(range(self.first, iterations), desc=desc, mininterval=2,
                        initial=self.first, total=iterations,
                        disable=not progress or not distributed.is_main())
        self.start = time.perf_counter()
        # SIGTERM (a scheduler's preemption or time limit, before its SIGKILL) or SIGINT:
        # the step under way ends, a resume checkpoint is written, the run stops (end_step).
        self.stop, self.handlers = 0, {}
        if resume is not None and threading.current_thread() is threading.main_thread():
            self.handlers = {s: signal.signal(s, self._request_stop) for s in STOP_SIGNALS}

    def _request_stop(self, signum, frame) -> None:
        if self.stop == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, as Python would
        self.stop = signum

    def release(self) -> None:
        """Give the signal handlers back (the run ended, or failed)."""
        for s, handler in self.handlers.items():
            signal.signal(s, handler)
        self.handlers = {}

    def _stop_requested(self) -> int:
        """The signal that asked to stop, agreed by every rank under torchrun (the highest
        any rank received), 0 for none."""
        if not distributed.is_distributed():
            return self.stop
        flag = torch.tensor([float(self.stop)], device=self.device)
        return int(distributed.all_reduce_max(flag).item())

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
        step, the term and the resume checkpoint that stays (written before this step)."""
        if bool(torch.isfinite(loss)):
            return
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
        """Log this step's terms; validate (for the learning curve only) when it is time;
        write the resume checkpoint when it is due."""
        for k, v in terms.items():
            self.window.setdefault(k, []).append(v)
        last = it + 1 == self.iterations
        if (it + 1) % self.log_every == 0 or last:
            self.history["iteration"].append(it + 1)
            for k, v in self.window.items():      # per-class lists average element-wise
                with warnings.catch_warnings():  # a window may lack present/absent pairs
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean = np.nanmean(np.asarray(v, dtype=np.float64), axis=0)
                self.history.setdefault(k, []).append(mean.tolist() if mean.ndim else float(mean))
            self.window = {}
        if (it + 1) % self.eval_every == 0 or last:
            self.clock("evaluation")
            val = evaluate(self.model, self.val_loader, self.num_classes, self.device)
            self.history["val_iteration"].append(it + 1)
            self.history["val_miou"].append(val["miou"])
            self.bar.set_postfix(loss=f"{loss.item():.3f}", val_miou=f"{val['miou']:.1f}")
        due = self.resume is not None and self.resume.due(it + 1, self.iterations)
        if due:
            self.clock("checkpoint")
            self._save(it + 1)
        if self.handlers and self._stop_requested():  # the last step too: it resumes to end
            self._stop_here(it + 1, saved=due)
        self.clock("data")  # until the next step's forward pass

    def _stop_here(self, step: int, saved: bool) -> None:
        """Write the resume checkpoint of `step` (unless just written), say so in one line
        and stop: SystemExit(128 + the signal) for SIGTERM, KeyboardInterrupt for SIGINT."""
        signum = self._stop_requested()
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


def _step(optimizer, loss, parameters, grad_clip, average: bool = False) -> None:
    """zero_grad, backward, (average gradients across ranks,) clip, step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    parameters = list(parameters)
    if average:
        distributed.average_gradients(parameters)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    optimizer.step()


def train_supervised(model, train_set, val_set, train_cfg, seed: int, device,
                     desc: str = "train", progress: bool = True, resume=None) -> dict:
    """Train `model` on the labelled `train_set` for train_cfg.iterations with L_seg; return
    the history: loss per iteration, `val_set` mIoU every eval_every iterations, seconds.
    `resume` (runs.Resume): continue from its checkpoint and write one every
    train.checkpoint_every steps. A non-finite loss raises FloatingPointError."""
    set_seed(seed)
    fmt = memory_format(train_cfg)
    model.to(device, memory_format=fmt).train()
    loop = None
    try:
        # Under torchrun the gradients are averaged across ranks; `model` stays the plain
        # module.
        network = DistributedDataParallel(model) if distributed.is_distributed() else model
        optimizer = make_optimizer(model, train_cfg)
        stream = batches(train_set, train_cfg.batch_size, seed, device)
        loop = _Loop(model, optimizer, train_cfg, train_cfg.lr, train_cfg.iterations, val_set,
                     device, desc, progress, resume=resume, parts={"stream": stream})
        clock = loop.clock
        for it in loop:
            batch = next(stream)
            clock("forward")
            with autocast(train_cfg, device):
                logits, _ = network(batch["image"].contiguous(memory_format=fmt))  # (B, C, h, w)
                loss = segmentation_loss(logits, batch["label"])
            loop.check_finite(it, loss, {"seg": loss.item()})
            clock("backward")
            _step(optimizer, loss, model.parameters(), train_cfg.grad_clip)
            loop.end_step(it, loss, {"loss": loss.item()})
        return loop.finish(train_cfg.batch_size * distributed.world_size())
    finally:
        if loop is not None:
            loop.release()
        model.to(memory_format=torch.contiguous_format)  # what evaluation and checkpoints see


def train_adaptation(model, source_set, target_set, val_set, cfg, seed: int, device,
                     progress: bool = True, desc: str = "adapt", log_every: int = 25,
                     resume=None) -> dict:
    """Adapt `model` (trained on the source) to the target with the objective that cfg.adapt
    switches on (docs/method.md §7); returns the history (each term's mean per `log_every`
    steps, target val mIoU every eval_every steps).

    Items of `target_set` carry "points" (C,) for weak_labels="point" and "pseudo_label"
    (H, W) for self-training (data.splits.WithItems); items of `source_set` may carry
    "translated" images (data.translated). Target ground truth is never used, except the
    human weak labels of WDA; the GT image labels are read only to *log* the precision and
    recall of the pseudo-weak labels. `resume` (runs.Resume): continue from its checkpoint
    and write one every train.checkpoint_every steps. A non-finite loss raises
    FloatingPointError.
    """
    check_switches(cfg)
    frozen = getattr(model, "freeze_bn", False)
    model.freeze_bn = frozen or cfg.adapt.freeze_bn  # DeepLabV2.train keeps BN in eval mode
    try:
        return _adapt(model, source_set, target_set, val_set, cfg, seed, device, progress,
                      desc, log_every, resume)
    finally:
        model.freeze_bn = frozen
        model.to(memory_format=torch.contiguous_format)  # what evaluation and checkpoints see


def _adapt(model, source_set, target_set, val_set, cfg, seed, device, progress, desc,
           log_every, resume) -> dict:
    a, t = cfg.adapt, cfg.train
    weights = LossWeights.from_config(a)
    set_seed(seed)
    fmt = memory_format(t)
    model.to(device, memory_format=fmt).train()
    optimizer = make_optimizer(model, dataclasses.replace(t, lr=a.lr))
    discs = Discriminators(weights, val_set.class_set.num_classes, model.feature_dim,
                           a.output_disc_width, a.category_disc_hidden
                           ).to(device, memory_format=fmt)
    source_stream = batches(source_set, t.batch_size, seed, device)
    target_stream = batches(target_set, t.batch_size, seed + 1, device)
    parts = {"source_stream": source_stream, "target_stream": target_stream,
             "fda_generator": torch.Generator().manual_seed(seed + 2), "discriminators": discs}
    if weights.lambda_adv or weights.lambda_cw:
        parts["disc_optimizer"] = torch.optim.Adam(discs.parameters(), lr=a.disc_lr,
                                                   betas=(0.9, 0.99), foreach=True)
    if a.self_training and a.st_augment:  # the student's input (self-training's extension)
        parts["augment_generator"] = torch.Generator().manual_seed(seed + 3)
    loop = _Loop(model, optimizer, t, a.lr, a.iterations, val_set, device, desc, progress,
                 log_every, resume, parts)
    try:
        return _adapt_steps(loop, model, optimizer, discs, weights, parts, source_stream,
                            target_stream, a, t, fmt)
    finally:
        loop.release()


def _adapt_steps(loop, model, optimizer, discs, weights, parts, source_stream, target_stream,
                 a, t, fmt) -> dict:
    """The adaptation loop's steps (_adapt), one per iteration of `loop`."""
    clock, device = loop.clock, loop.device
    disc_optimizer = parts.get("disc_optimizer")
    for it in loop:
        src, tgt = next(source_stream), next(target_stream)
        if a.pixel_adaptation:
            src["image"] = restyle_source(src["image"], tgt["image"], a.fda_prob, a.fda_beta,
                                          parts["fda_generator"], src.get("translated"),
                                          a.restyle)
        if "augment_generator" in parts:  # pseudo labels were made from the plain images
            tgt["image"] = colour_jitter(tgt["image"], parts["augment_generator"])
        clock("forward")
        # The generator's backward pass needs the discriminators' input gradients only, not
        # their weight gradients (the discriminator step sets those to None first).
        discs.requires_grad_(False)
        with autocast(t, device):
            logits_s, feats_s = model(src["image"].contiguous(memory_format=fmt))  # (B, C, h, w),
            logits_t, feats_t = model(tgt["image"].contiguous(memory_format=fmt))  # (B, D, h, w)
            weak_t, log = _target_weak_labels(a, model, logits_t, tgt)  # (B, C)
            sizes = src["image"].shape[-2:], tgt["image"].shape[-2:]
            kept = {}
            loss, terms = generator_loss(weights, discs, logits_s, src["label"], logits_t,
                                         feats_t, sizes[1], weak_t, tgt.get("points"),
                                         tgt.get("pseudo_label"), a.weak_dropout,
                                         Pooling.from_config(a), src["weak_label"], kept)
        loop.check_finite(it, loss, terms)
        clock("backward")
        _step(optimizer, loss, model.parameters(), t.grad_clip, average=True)
        discs.requires_grad_(True)
        if disc_optimizer is not None:
            clock("discriminators")
            with autocast(t, device):
                loss_d, d_terms = discriminator_loss(discs, logits_s, feats_s, src["weak_label"],
                                                     logits_t, feats_t, weak_t, sizes, kept)
            loop.check_finite(it, loss_d, d_terms)
            _step(disc_optimizer, loss_d, discs.parameters(), None, average=True)
            terms.update(d_terms)
        loop.end_step(it, loss, {**terms, **log})
    return loop.finish(2 * t.batch_size * distributed.world_size())


def _target_weak_labels(a, model, logits_t, tgt) -> tuple[torch.Tensor | None, dict]:
    """The target batch's weak labels (B, C) from the source a.weak_labels names, and, for
    pseudo-weak labels and the all-present control, what `weak_label_log` measures of them."""
    if a.weak_labels in ("pseudo", "present"):
        with torch.no_grad():
            if a.weak_labels == "pseudo" and a.pseudo_weak_from == "online_eval":
                model.eval()  # BatchNorm's running statistics
                logits_t = model(tgt["image"])[0]
                model.train()
            p_t = image_class_scores(logits_t.detach(), Pooling.from_config(a))
        if a.weak_labels == "present":  # the control: every class, whatever the scores
            y_t = torch.ones_like(p_t)
        else:
            y_t = tgt["pseudo_weak"] if a.pseudo_weak_from == "start" \
                else (p_t > a.pseudo_threshold).float()
        return y_t, weak_label_log(p_t, y_t, tgt.get("weak_label"), logits_t)
    if a.weak_labels in ("image", "point"):
        return tgt["weak_label"], {}
    return None, {}


@torch.no_grad()
def weak_label_log(scores, pseudo, truth, logits) -> dict:
    """What training logs of the pseudo-weak labels (docs/method.md §4), read against the GT
    image labels, which nothing trains on: micro precision and recall (%); per class (lists
    of C) the shares of the batch's images that are true positives, that are labelled
    present and that truly contain the class; the mean P_c over truly present and truly
    absent (image, class) pairs; and the mean logit, which L_c's positive labels can raise
    for every class at once without changing any softmax.
    scores, pseudo, truth (B, C); logits (B, C, h, w). truth None (a target without
    image-level labels): the mean logit alone."""
    if truth is None:
        return {"mean_logit": float(logits.mean())}
    precision, recall = presence_precision_recall(pseudo, truth)
    present = truth > 0
    return {"pseudo_precision": precision, "pseudo_recall": recall,
            "pseudo_tp": (pseudo * truth).mean(0).tolist(),
            "pseudo_labelled": pseudo.mean(0).tolist(),
            "pseudo_true": truth.mean(0).tolist(),
            "score_present": float(scores[present].mean()) if present.any() else float("nan"),
            "score_absent": float(scores[~present].mean()) if (~present).any() else float("nan"),
            "mean_logit": float(logits.mean())}
