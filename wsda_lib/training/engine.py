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

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    RandomSampler,
    default_collate,
)

from wsda_lib.core import distributed
from wsda_lib.core.config import check_switches
from wsda_lib.core.device import set_seed
from wsda_lib.data.splits import InMemorySplit
from wsda_lib.method.objective import (
    Discriminators,
    LossWeights,
    StepOutputs,
    discriminator_loss,
    generator_loss,
    segmentation_loss,
)
from wsda_lib.method.pixel_adaptation import colour_jitter, restyle_source
from wsda_lib.method.weak_classification import Pooling, image_class_scores
from wsda_lib.training.evaluate import presence_precision_recall
from wsda_lib.training.loop import Loop


class BatchStream:
    """An endless stream of shuffled training batches, moved to `device`; the order depends
    on `seed` only. Incomplete last batches are dropped (BatchNorm dislikes batches of 1).
    Under torchrun each rank draws its own disjoint share of every epoch.

    The batches are those of DataLoader(dataset, batch_size, shuffle=True, drop_last=True,
    generator=torch.Generator().manual_seed(seed)) epoch after epoch, the random draws
    included, but the stream knows its position: `state_dict()` -> {"epoch", "position",
    "generator"} and `load_state_dict` resume it at the same batch without reading the
    images it skips (a resumed run sees the data an uninterrupted one would)."""

    def __init__(self, dataset, batch_size: int, seed: int, device, workers: int = 0):
        if len(dataset) < batch_size * distributed.world_size():
            raise ValueError(f"split {getattr(dataset, 'name', '?')!r} has {len(dataset)} "
                             f"images, fewer than batch_size={batch_size} x "
                             f"{distributed.world_size()} process(es)")
        self.dataset, self.device = dataset, device
        # Decoding beside the step: only a split read from files gains from workers.
        self.workers = 0 if isinstance(dataset, InMemorySplit) else workers
        self._loader = None
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
        self._loader = None  # a worker pool reads this epoch's batches from `position` on

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._indices is None:
            self._start_epoch()
        if self.workers:
            return self._from_workers()
        indices = next(self._indices, None)
        if indices is None:
            self.epoch, self.position = self.epoch + 1, 0
            self._start_epoch()
            indices = next(self._indices)
        self.position += 1
        batch = default_collate([self.dataset[i] for i in indices])
        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _from_workers(self) -> dict:
        """The next batch, read by `workers` processes of a DataLoader over the rest of this
        epoch's index batches (the very batches, in order, of the in-process path)."""
        if self._loader is None:
            if self._indices is None:
                self._start_epoch()
            remaining = list(self._indices)   # this epoch's batches from `position` on
            if not remaining:
                self.epoch, self.position = self.epoch + 1, 0
                self._start_epoch()
                remaining = list(self._indices)
            cuda = torch.device(self.device).type == "cuda"
            self._loader = iter(DataLoader(
                self.dataset, batch_sampler=remaining, num_workers=self.workers,
                pin_memory=cuda, generator=torch.Generator()))  # leaves the global RNG alone
        batch = next(self._loader, None)
        if batch is None:
            self._loader = None
            self._indices = iter(())
            return self._from_workers()
        self.position += 1
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                for k, v in batch.items()}

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


def batches(dataset, batch_size: int, seed: int, device, workers: int = 0) -> BatchStream:
    """The training stream of `dataset` (BatchStream), read by `workers` processes."""
    return BatchStream(dataset, batch_size, seed, device, workers)


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
        stream = batches(train_set, train_cfg.batch_size, seed, device, train_cfg.workers)
        loop = Loop(model, optimizer, train_cfg, train_cfg.lr, train_cfg.iterations, val_set,
                     device, desc, progress, resume=resume, parts={"stream": stream})
        clock = loop.clock
        for it in loop:
            batch = next(stream)
            clock("forward")
            with autocast(train_cfg, device):
                logits, _ = network(batch["image"].contiguous(memory_format=fmt))  # (B, C, h, w)
                loss = segmentation_loss(logits, batch["label"])
            loop.check_finite(it, loss, {"seg": loss.detach()})
            clock("backward")
            _step(optimizer, loss, model.parameters(), train_cfg.grad_clip)
            loop.end_step(it, loss, {"loss": loss.detach()})
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
    source_stream = batches(source_set, t.batch_size, seed, device, t.workers)
    target_stream = batches(target_set, t.batch_size, seed + 1, device, t.workers)
    parts = {"source_stream": source_stream, "target_stream": target_stream,
             "fda_generator": torch.Generator().manual_seed(seed + 2), "discriminators": discs}
    if weights.lambda_adv or weights.lambda_cw:
        parts["disc_optimizer"] = torch.optim.Adam(discs.parameters(), lr=a.disc_lr,
                                                   betas=(0.9, 0.99), foreach=True)
    if a.self_training and a.st_augment:  # the student's input (self-training's extension)
        parts["augment_generator"] = torch.Generator().manual_seed(seed + 3)
    loop = Loop(model, optimizer, t, a.lr, a.iterations, val_set, device, desc, progress,
                 log_every, resume, parts)
    try:
        return _adapt_steps(loop, model, optimizer, discs, weights, parts, source_stream,
                            target_stream, a, t, fmt)
    finally:
        loop.release()


def _adapt_steps(loop, model, optimizer, discs, weights, parts, source_stream, target_stream,
                 a, t, fmt) -> dict:
    """The adaptation loop's steps (_adapt), one per iteration of `loop`: the paper's order,
    the generator's loss and step, then the discriminators'."""
    clock, device = loop.clock, loop.device
    disc_optimizer = parts.get("disc_optimizer")
    for it in loop:
        src, tgt = prepare_batches(next(source_stream), next(target_stream), a, parts)
        clock("forward")
        # The generator's backward pass needs the discriminators' input gradients only, not
        # their weight gradients (the discriminator step sets those to None first).
        discs.requires_grad_(False)
        with autocast(t, device):
            out, log = forward_both(model, src, tgt, a, fmt)
            loss, terms = generator_loss(weights, discs, out, a.weak_dropout,
                                         Pooling.from_config(a))
        loop.check_finite(it, loss, terms)
        clock("backward")
        _step(optimizer, loss, model.parameters(), t.grad_clip, average=True)
        discs.requires_grad_(True)
        if disc_optimizer is not None:
            clock("discriminators")
            with autocast(t, device):
                loss_d, d_terms = discriminator_loss(discs, out)
            loop.check_finite(it, loss_d, d_terms)
            _step(disc_optimizer, loss_d, discs.parameters(), None, average=True)
            terms.update(d_terms)
        loop.end_step(it, loss, {**terms, **log})
    return loop.finish(2 * t.batch_size * distributed.world_size())


def prepare_batches(src: dict, tgt: dict, a, parts: dict) -> tuple[dict, dict]:
    """The step's inputs: with pixel adaptation, source images restyled towards the target
    (method.pixel_adaptation, parts["fda_generator"]); with self-training's augmented student,
    target images colour-jittered (parts["augment_generator"]; the pseudo labels were made
    from the plain images). The batches are changed in place and returned."""
    if a.pixel_adaptation:
        src["image"] = restyle_source(src["image"], tgt["image"], a.fda_prob, a.fda_beta,
                                      parts["fda_generator"], src.get("translated"), a.restyle)
    if "augment_generator" in parts:
        tgt["image"] = colour_jitter(tgt["image"], parts["augment_generator"])
    return src, tgt


def forward_both(model, src: dict, tgt: dict, a, fmt=torch.contiguous_format
                 ) -> tuple[StepOutputs, dict]:
    """Both batches through the network, and the target's weak labels from the source that
    a.weak_labels names: the step's outputs (method.objective.StepOutputs) for
    generator_loss and discriminator_loss, and what `weak_label_log` measures of the
    pseudo-weak labels (tensors on the device). In a notebook, with the adaptation's
    `Discriminators`:

        out, log = forward_both(model, src, tgt, cfg.adapt)
        loss, terms = generator_loss(LossWeights.from_config(cfg.adapt), discs, out)
    """
    logits_s, feats_s = model(src["image"].contiguous(memory_format=fmt))  # (B, C, h, w),
    logits_t, feats_t = model(tgt["image"].contiguous(memory_format=fmt))  # (B, D, h, w)
    weak_t, log = _target_weak_labels(a, model, logits_t, tgt)           # (B, C)
    out = StepOutputs(logits_s, feats_s, src["label"], tuple(src["image"].shape[-2:]),
                      logits_t, feats_t, tuple(tgt["image"].shape[-2:]),
                      weak_s=src["weak_label"], weak_t=weak_t, points_t=tgt.get("points"),
                      pseudo_t=tgt.get("pseudo_label"))
    return out, log


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
def weak_label_log(scores, pseudo, truth, logits) -> dict[str, torch.Tensor]:
    """What training logs of the pseudo-weak labels (docs/method.md §4), read against the GT
    image labels, which nothing trains on: micro precision and recall (%); per class (C,)
    the shares of the batch's images that are true positives, that are labelled present and
    that truly contain the class; the mean P_c over truly present and truly absent (image,
    class) pairs (NaN where there is none); and the mean logit, which L_c's positive labels
    can raise for every class at once without changing any softmax. Tensors on the device
    (the loop copies them to the host once per log interval).
    scores, pseudo, truth (B, C); logits (B, C, h, w). truth None (a target without
    image-level labels): the mean logit alone."""
    if truth is None:
        return {"mean_logit": logits.mean()}
    precision, recall = presence_precision_recall(pseudo, truth, as_tensors=True)
    present = (truth > 0).to(scores.dtype)
    return {"pseudo_precision": precision, "pseudo_recall": recall,
            "pseudo_tp": (pseudo * truth).mean(0),
            "pseudo_labelled": pseudo.mean(0),
            "pseudo_true": truth.mean(0),
            "score_present": (scores * present).sum() / present.sum(),
            "score_absent": (scores * (1 - present)).sum() / (1 - present).sum(),
            "mean_logit": logits.mean()}
