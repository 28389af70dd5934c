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
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .data.classes import IGNORE_INDEX
from .evaluate import evaluate


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
    on `seed` only. Incomplete last batches are dropped (BatchNorm dislikes batches of 1)."""
    if len(dataset) < batch_size:
        raise ValueError(f"split {getattr(dataset, 'name', '?')!r} has {len(dataset)} images, "
                         f"fewer than batch_size={batch_size}")
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                        generator=generator)
    while True:
        for batch in loader:
            yield {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


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
    optimizer = make_optimizer(model, train_cfg)
    stream = batches(train_set, train_cfg.batch_size, seed, device)
    val_loader = DataLoader(val_set, batch_size=train_cfg.eval_batch_size)
    history = {"iteration": [], "loss": [], "val_iteration": [], "val_miou": []}
    start = time.perf_counter()
    bar = tqdm(range(train_cfg.iterations), desc=desc, disable=not progress, mininterval=2)
    for it in bar:
        set_lr(optimizer, poly_lr(train_cfg.lr, it, train_cfg.iterations, train_cfg.poly_power))
        batch = next(stream)
        logits, _ = model(batch["image"])                          # (B, C, h, w)
        loss = segmentation_loss(logits, batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if train_cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        optimizer.step()

        history["iteration"].append(it + 1)
        history["loss"].append(loss.item())
        if (it + 1) % train_cfg.eval_every == 0 or it + 1 == train_cfg.iterations:
            val = evaluate(model, val_loader, num_classes, device)
            history["val_iteration"].append(it + 1)
            history["val_miou"].append(val["miou"])
            bar.set_postfix(loss=f"{loss.item():.3f}", val_miou=f"{val['miou']:.1f}")
    history["seconds"] = time.perf_counter() - start
    history["images_per_second"] = train_cfg.iterations * train_cfg.batch_size / history["seconds"]
    return history
