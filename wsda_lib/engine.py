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

import dataclasses
import random
import time
import warnings

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from . import distributed
from .config import check_switches
from .evaluate import eval_loader, evaluate, presence_precision_recall
from .method.objective import (
    Discriminators,
    LossWeights,
    discriminator_loss,
    generator_loss,
    segmentation_loss,
)
from .method.pixel_adaptation import restyle_source
from .method.weak_classification import Pooling, image_class_scores


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (every device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" -> the GPU when one is present, else the CPU; anything else is used as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"DEVICE={name!r} but no CUDA GPU is available; use 'auto' or 'cpu'")
    return torch.device(name)


def batches(dataset, batch_size: int, seed: int, device):
    """An endless stream of shuffled training batches, moved to `device`; the order depends
    on `seed` only. Incomplete last batches are dropped (BatchNorm dislikes batches of 1).
    Under torchrun each rank draws its own disjoint share of every epoch."""
    if len(dataset) < batch_size * distributed.world_size():
        raise ValueError(f"split {getattr(dataset, 'name', '?')!r} has {len(dataset)} images, "
                         f"fewer than batch_size={batch_size} x {distributed.world_size()} "
                         f"process(es)")
    if distributed.is_distributed():
        sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True)
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True)
    else:
        sampler = None
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                            generator=torch.Generator().manual_seed(seed))
    epoch = 0
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)
        for batch in loader:
            yield {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        epoch += 1


def make_optimizer(model, train_cfg):
    groups = model.parameter_groups(train_cfg.lr, train_cfg.head_lr_mult)
    if train_cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=train_cfg.lr, momentum=train_cfg.momentum,
                               weight_decay=train_cfg.weight_decay)
    if train_cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=train_cfg.lr, betas=(train_cfg.momentum, 0.99),
                                weight_decay=train_cfg.weight_decay)
    raise ValueError(f"train.optimizer must be 'sgd' or 'adam', got {train_cfg.optimizer!r}")


def poly_lr(base_lr: float, it: int, max_it: int, power: float) -> float:
    """The poly schedule: base_lr * (1 - it / max_it) ** power."""
    return base_lr * (1 - it / max_it) ** power


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)


class _Loop:
    """What both loops share: the poly schedule, the progress bar, the logged history (means
    over `log_every` steps) and the validation mIoU every `eval_every` steps."""

    def __init__(self, model, optimizer, train_cfg, lr: float, iterations: int, val_set,
                 device, desc: str, progress: bool, log_every: int = 1):
        if iterations < 1:
            raise ValueError(f"{desc}: iterations must be >= 1, got {iterations}")
        if train_cfg.poly_horizon is not None and train_cfg.poly_horizon < iterations:
            raise ValueError(f"train.poly_horizon={train_cfg.poly_horizon} is shorter than the "
                             f"{iterations} iterations of {desc}; the poly schedule would end "
                             f"before training does")
        self.model, self.optimizer, self.device = model, optimizer, device
        self.lr, self.iterations, self.log_every = lr, iterations, log_every
        self.horizon, self.power = train_cfg.poly_horizon or iterations, train_cfg.poly_power
        self.eval_every = train_cfg.eval_every
        self.val_loader = eval_loader(val_set, train_cfg.eval_batch_size)
        self.num_classes = val_set.class_set.num_classes
        self.history = {"iteration": [], "val_iteration": [], "val_miou": []}
        self.window: dict[str, list] = {}
        self.bar = tqdm(range(iterations), desc=desc, mininterval=2,
                        disable=not progress or not distributed.is_main())
        self.start = time.perf_counter()

    def __iter__(self):
        for it in self.bar:
            set_lr(self.optimizer, poly_lr(self.lr, it, self.horizon, self.power))
            yield it

    def end_step(self, it: int, loss: torch.Tensor, terms: dict) -> None:
        """Log this step's terms; validate (for the learning curve only) when it is time."""
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
            val = evaluate(self.model, self.val_loader, self.num_classes, self.device)
            self.history["val_iteration"].append(it + 1)
            self.history["val_miou"].append(val["miou"])
            self.bar.set_postfix(loss=f"{loss.item():.3f}", val_miou=f"{val['miou']:.1f}")

    def finish(self, images_per_step: int) -> dict:
        seconds = time.perf_counter() - self.start
        return {**self.history, "seconds": seconds,
                "images_per_second": self.iterations * images_per_step / seconds}


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
                     desc: str = "train", progress: bool = True) -> dict:
    """Train `model` on the labelled `train_set` for train_cfg.iterations with L_seg; return
    the history: loss per iteration, `val_set` mIoU every eval_every iterations, seconds."""
    set_seed(seed)
    model.to(device).train()
    # Under torchrun the gradients are averaged across ranks; `model` stays the plain module.
    network = DistributedDataParallel(model) if distributed.is_distributed() else model
    optimizer = make_optimizer(model, train_cfg)
    stream = batches(train_set, train_cfg.batch_size, seed, device)
    loop = _Loop(model, optimizer, train_cfg, train_cfg.lr, train_cfg.iterations, val_set,
                 device, desc, progress)
    for it in loop:
        batch = next(stream)
        logits, _ = network(batch["image"])                        # (B, C, h, w)
        loss = segmentation_loss(logits, batch["label"])
        _step(optimizer, loss, model.parameters(), train_cfg.grad_clip)
        loop.end_step(it, loss, {"loss": loss.item()})
    return loop.finish(train_cfg.batch_size * distributed.world_size())


def train_adaptation(model, source_set, target_set, val_set, cfg, seed: int, device,
                     progress: bool = True, desc: str = "adapt", log_every: int = 25) -> dict:
    """Adapt `model` (trained on the source) to the target with the objective that cfg.adapt
    switches on (docs/method.md §7); returns the history (each term's mean per `log_every`
    steps, target val mIoU every eval_every steps).

    Items of `target_set` carry "points" (C,) for weak_labels="point" and "pseudo_label"
    (H, W) for self-training (data.splits.WithItems); items of `source_set` may carry
    "translated" images (data.translated). Target ground truth is never used, except the
    human weak labels of WDA; the GT image labels are read only to *log* the precision and
    recall of the pseudo-weak labels.
    """
    check_switches(cfg)
    frozen = getattr(model, "freeze_bn", False)
    model.freeze_bn = frozen or cfg.adapt.freeze_bn  # DeepLabV2.train keeps BN in eval mode
    try:
        return _adapt(model, source_set, target_set, val_set, cfg, seed, device, progress,
                      desc, log_every)
    finally:
        model.freeze_bn = frozen


def _adapt(model, source_set, target_set, val_set, cfg, seed, device, progress, desc,
           log_every) -> dict:
    a, t = cfg.adapt, cfg.train
    weights = LossWeights.from_config(a)
    set_seed(seed)
    model.to(device).train()
    optimizer = make_optimizer(model, dataclasses.replace(t, lr=a.lr))
    discs = Discriminators(weights, val_set.class_set.num_classes, model.feature_dim,
                           a.output_disc_width, a.category_disc_hidden).to(device)
    disc_optimizer = torch.optim.Adam(discs.parameters(), lr=a.disc_lr, betas=(0.9, 0.99)) \
        if weights.lambda_adv or weights.lambda_cw else None
    source_stream = batches(source_set, t.batch_size, seed, device)
    target_stream = batches(target_set, t.batch_size, seed + 1, device)
    fda_generator = torch.Generator().manual_seed(seed + 2)
    loop = _Loop(model, optimizer, t, a.lr, a.iterations, val_set, device, desc, progress,
                 log_every)
    for it in loop:
        src, tgt = next(source_stream), next(target_stream)
        if a.pixel_adaptation:
            src["image"] = restyle_source(src["image"], tgt["image"], a.fda_prob, a.fda_beta,
                                          fda_generator, src.get("translated"))
        logits_s, feats_s = model(src["image"])                    # (B, C, h, w), (B, D, h, w)
        logits_t, feats_t = model(tgt["image"])
        weak_t, log = _target_weak_labels(a, model, logits_t, tgt)  # (B, C)
        sizes = src["image"].shape[-2:], tgt["image"].shape[-2:]
        loss, terms = generator_loss(weights, discs, logits_s, src["label"], logits_t, feats_t,
                                     sizes[1], weak_t, tgt.get("points"), tgt.get("pseudo_label"),
                                     a.weak_dropout, Pooling.from_config(a), src["weak_label"])
        _step(optimizer, loss, model.parameters(), t.grad_clip, average=True)
        if disc_optimizer is not None:
            loss_d, d_terms = discriminator_loss(discs, logits_s, feats_s, src["weak_label"],
                                                 logits_t, feats_t, weak_t, sizes)
            _step(disc_optimizer, loss_d, discs.parameters(), None, average=True)
            terms.update(d_terms)
        loop.end_step(it, loss, {**terms, **log})
    return loop.finish(2 * t.batch_size * distributed.world_size())


def _target_weak_labels(a, model, logits_t, tgt) -> tuple[torch.Tensor | None, dict]:
    """The target batch's weak labels (B, C) from the source a.weak_labels names, and, for
    pseudo-weak labels, what `weak_label_log` measures of them."""
    if a.weak_labels == "pseudo":
        with torch.no_grad():
            if a.pseudo_weak_from == "online_eval":  # BatchNorm's running statistics
                model.eval()
                logits_t = model(tgt["image"])[0]
                model.train()
            p_t = image_class_scores(logits_t.detach(), Pooling.from_config(a))
        y_t = tgt["pseudo_weak"] if a.pseudo_weak_from == "start" \
            else (p_t > a.pseudo_threshold).float()
        return y_t, weak_label_log(p_t, y_t, tgt["weak_label"], logits_t)
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
    scores, pseudo, truth (B, C); logits (B, C, h, w)."""
    precision, recall = presence_precision_recall(pseudo, truth)
    present = truth > 0
    return {"pseudo_precision": precision, "pseudo_recall": recall,
            "pseudo_tp": (pseudo * truth).mean(0).tolist(),
            "pseudo_labelled": pseudo.mean(0).tolist(),
            "pseudo_true": truth.mean(0).tolist(),
            "score_present": float(scores[present].mean()) if present.any() else float("nan"),
            "score_absent": float(scores[~present].mean()) if (~present).any() else float("nan"),
            "mean_logit": float(logits.mean())}
