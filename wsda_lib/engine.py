"""The training loop: plain, seeded, readable top to bottom.

`train_supervised` trains a segmentation network on one labelled split. It is the source-only
stage (labelled source, PAPER.md §5 L_seg) and, pointed at the target's labels, the oracle.
Model selection never looks at target labels: the loop runs a fixed number of iterations and
keeps the final weights; source val is evaluated along the way only to draw learning curves.
"""

from __future__ import annotations

import random
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from . import distributed
from .data.classes import IGNORE_INDEX
from .evaluate import eval_loader, evaluate
from .method.category_alignment import (
    CategoryDiscriminators,
    category_adversarial_loss,
    category_discriminator_loss,
    category_features,
    discriminator_accuracy,
)
from .method.output_alignment import (
    OutputDiscriminator,
    output_adversarial_loss,
    output_discriminator_loss,
    output_probabilities,
)
from .method.pixel_adaptation import fourier_amplitude_swap
from .method.point_supervision import point_loss
from .method.weak_classification import pseudo_weak_labels, weak_label_loss


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


def segmentation_loss(logits, labels):
    """L_seg: pixel cross-entropy on logits (B, C, h, w) upsampled to the labels' (B, H, W),
    ignoring IGNORE_INDEX."""
    up = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(up, labels, ignore_index=IGNORE_INDEX)


def train_supervised(model, train_set, val_set, train_cfg, num_classes: int, seed: int,
                     device, desc: str = "train", progress: bool = True):
    """Train `model` on the labelled `train_set` for train_cfg.iterations; return a history
    dict with the loss curve and the `val_set` scores at every eval_every iterations."""
    if train_cfg.iterations < 1:
        raise ValueError(f"train.iterations must be >= 1, got {train_cfg.iterations}")
    set_seed(seed)
    model.to(device).train()
    # Under torchrun the gradients are averaged across ranks; `model` stays the plain module.
    network = DistributedDataParallel(model) if distributed.is_distributed() else model
    optimizer = make_optimizer(model, train_cfg)
    stream = batches(train_set, train_cfg.batch_size, seed, device)
    val_loader = eval_loader(val_set, train_cfg.eval_batch_size)
    history = {"iteration": [], "loss": [], "val_iteration": [], "val_miou": []}
    start = time.perf_counter()
    bar = tqdm(range(train_cfg.iterations), desc=desc,
               disable=not progress or not distributed.is_main(), mininterval=2)
    for it in bar:
        set_lr(optimizer, poly_lr(train_cfg.lr, it, train_cfg.poly_horizon or train_cfg.iterations,
                                  train_cfg.poly_power))
        batch = next(stream)
        logits, _ = network(batch["image"])                        # (B, C, h, w)
        loss = segmentation_loss(logits, batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if train_cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        optimizer.step()

        history["iteration"].append(it + 1)
        history["loss"].append(loss.item())
        _maybe_validate(model, val_loader, num_classes, device, it, train_cfg.iterations,
                        train_cfg.eval_every, history, bar, loss)
    history["seconds"] = time.perf_counter() - start
    history["images_per_second"] = (train_cfg.iterations * train_cfg.batch_size
                                    * distributed.world_size() / history["seconds"])
    return history


def _maybe_validate(model, val_loader, num_classes, device, it, iterations, every, history,
                    bar, loss):
    """Every `every` iterations and at the last: validation mIoU into the history (for the
    learning curve only; no model is selected by it)."""
    if (it + 1) % every == 0 or it + 1 == iterations:
        val = evaluate(model, val_loader, num_classes, device)
        history["val_iteration"].append(it + 1)
        history["val_miou"].append(val["miou"])
        bar.set_postfix(loss=f"{loss.item():.3f}", val_miou=f"{val['miou']:.1f}")


WEAK_LABEL_SOURCES = ("none", "pseudo", "image", "point")


def _presence_precision_recall(predicted, truth):
    tp = (predicted * truth).sum()
    return (float(100 * tp / predicted.sum().clamp(min=1)),
            float(100 * tp / truth.sum().clamp(min=1)))


def train_adaptation(model, source_set, target_set, val_set, cfg, num_classes: int, seed: int,
                     device, weak_labels: str = "pseudo", pixel_adaptation: bool = False,
                     target_points=None, target_pseudo_labels=None, progress: bool = True,
                     desc: str = "adapt", log_every: int = 25):
    """Adapt `model` (already trained on the source) to the target; returns a history dict.

    One iteration, in the paper's order:
      1. source batch: L_seg (optionally on FDA-restyled source images, `pixel_adaptation`);
      2. target batch: weak labels y_t (pseudo, image or point), then λ_c·L_c, λ_adv·L_adv,
         λ_cw·L_adv^C, the point loss and the self-training loss, whichever are on;
      3. one generator step on the sum;
      4. discriminator step on detached source and target outputs.
    `target_points` (N, C) and `target_pseudo_labels` (N, H, W) are indexed by the target
    item's "index". Target ground-truth labels are never used, except the human weak labels
    when weak_labels is "image" or "point"; the GT image labels are read only to *log* how
    accurate the pseudo-weak labels are.
    """
    a, t = cfg.adapt, cfg.train
    if weak_labels not in WEAK_LABEL_SOURCES:
        raise ValueError(f"weak_labels must be one of {WEAK_LABEL_SOURCES}, got {weak_labels!r}")
    if weak_labels == "none" and (a.lambda_c or a.lambda_cw):
        raise ValueError("lambda_c and lambda_cw need weak labels; got weak_labels='none'")
    if weak_labels == "point" and target_points is None:
        raise ValueError("weak_labels='point' needs target_points")
    lambda_c = a.lambda_c if weak_labels == "pseudo" else a.lambda_c_human
    set_seed(seed)
    model.to(device).train()
    optimizer = make_optimizer(model, _with_lr(t, a.lr))
    output_disc = OutputDiscriminator(num_classes, a.output_disc_width).to(device) \
        if a.lambda_adv else None
    category_disc = CategoryDiscriminators(num_classes, model.feature_dim,
                                           a.category_disc_hidden).to(device) \
        if a.lambda_cw and weak_labels != "none" else None
    disc_params = [p for d in (output_disc, category_disc) if d is not None
                   for p in d.parameters()]
    disc_optimizer = torch.optim.Adam(disc_params, lr=a.disc_lr, betas=(0.9, 0.99)) \
        if disc_params else None
    if target_points is not None:
        target_points = torch.as_tensor(target_points, device=device)
    if target_pseudo_labels is not None:
        target_pseudo_labels = torch.as_tensor(target_pseudo_labels, device=device).long()
    source_stream = batches(source_set, t.batch_size, seed, device)
    target_stream = batches(target_set, t.batch_size, seed + 1, device)
    val_loader = eval_loader(val_set, t.eval_batch_size)
    fda_generator = torch.Generator().manual_seed(seed + 2)
    history = {"iteration": [], "val_iteration": [], "val_miou": []}
    logs = {}
    start = time.perf_counter()
    bar = tqdm(range(a.iterations), desc=desc,
               disable=not progress or not distributed.is_main(), mininterval=2)
    for it in bar:
        set_lr(optimizer, poly_lr(a.lr, it, t.poly_horizon or a.iterations, t.poly_power))
        src, tgt = next(source_stream), next(target_stream)
        size = src["label"].shape[-2:]

        # 1. Source: supervised segmentation loss.
        source_images = src["image"]
        if pixel_adaptation:
            restyle = (torch.rand(len(source_images), generator=fda_generator) < a.fda_prob)
            if "translated" in src:  # translated offline (CycleGAN in the paper)
                restyled = src["translated"]
            else:                    # the FDA stand-in, against this batch's target images
                style = tgt["image"]
                if style.shape != source_images.shape:  # paper scale: 1280x720 vs 1024x512
                    style = F.interpolate(style, size=source_images.shape[-2:],
                                          mode="bilinear", align_corners=False)
                restyled = fourier_amplitude_swap(source_images, style, a.fda_beta)
            source_images = torch.where(restyle.to(device).view(-1, 1, 1, 1), restyled,
                                        source_images)
        logits_s, feats_s = model(source_images)                       # (B, C, h, w), (B, D, h, w)
        loss = segmentation_loss(logits_s, src["label"])
        terms = {"seg": loss.item()}

        # 2. Target: weak labels, then the target terms that are switched on.
        logits_t, feats_t = model(tgt["image"])
        if weak_labels == "pseudo":
            y_t = pseudo_weak_labels(logits_t, a.pseudo_threshold, a.smooth_max_r)   # (B, C)
            precision, recall = _presence_precision_recall(y_t, tgt["weak_label"])
            terms.update(pseudo_precision=precision, pseudo_recall=recall)
        elif weak_labels in ("image", "point"):
            y_t = tgt["weak_label"]
        else:
            y_t = None
        if lambda_c and y_t is not None:
            dropped = F.dropout(logits_t, a.weak_dropout, training=True)
            loss_c = weak_label_loss(dropped, y_t, a.smooth_max_r)
            loss = loss + lambda_c * loss_c
            terms["weak"] = loss_c.item()
        if output_disc is not None:
            probs_t = output_probabilities(logits_t, size)
            loss_adv = output_adversarial_loss(output_disc(probs_t))
            loss = loss + a.lambda_adv * loss_adv
            terms["adv"] = loss_adv.item()
        if category_disc is not None:
            cat_t = category_features(logits_t, feats_t)               # (B, C, D)
            loss_cw = category_adversarial_loss(category_disc(cat_t), y_t)
            loss = loss + a.lambda_cw * loss_cw
            terms["adv_cw"] = loss_cw.item()
        if weak_labels == "point":
            loss_pt = point_loss(logits_t, target_points[tgt["index"]], size)
            loss = loss + a.lambda_point * loss_pt
            terms["point"] = loss_pt.item()
        if target_pseudo_labels is not None:
            loss_st = segmentation_loss(logits_t, target_pseudo_labels[tgt["index"]])
            loss = loss + a.lambda_st * loss_st
            terms["self_training"] = loss_st.item()

        # 3. Generator step.
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(model.parameters())  # under torchrun
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()

        # 4. Discriminator step, on detached outputs (the generator's gradients are dropped).
        if disc_optimizer is not None:
            disc_optimizer.zero_grad(set_to_none=True)
            loss_d = 0.0
            if output_disc is not None:
                loss_d = loss_d + output_discriminator_loss(
                    output_disc(output_probabilities(logits_s.detach(), size)),
                    output_disc(probs_t.detach()))
            if category_disc is not None:
                cat_s = category_features(logits_s.detach(), feats_s.detach())
                d_s, d_t = category_disc(cat_s), category_disc(cat_t.detach())
                y_s = src["weak_label"]
                loss_d = loss_d + category_discriminator_loss(d_s, y_s, d_t, y_t)
                terms["disc_cw_accuracy"] = discriminator_accuracy(d_s, y_s, d_t, y_t)
            loss_d.backward()
            distributed.average_gradients(disc_params)
            disc_optimizer.step()
            terms["disc"] = loss_d.item()

        for k, v in terms.items():
            logs.setdefault(k, []).append(v)
        if (it + 1) % log_every == 0 or it + 1 == a.iterations:
            history["iteration"].append(it + 1)
            for k, v in logs.items():
                history.setdefault(k, []).append(float(np.mean(v)))
            logs = {}
        _maybe_validate(model, val_loader, num_classes, device, it, a.iterations, t.eval_every,
                        history, bar, loss)
    history["seconds"] = time.perf_counter() - start
    return history


def _with_lr(train_cfg, lr):
    import dataclasses

    return dataclasses.replace(train_cfg, lr=lr)
