"""Target BatchNorm statistics (AdaBN): a BASELINE, not the paper's method.

Li et al., "Revisiting Batch Normalization for Practical Domain Adaptation" (2016): keep every
weight of a source-trained network and replace each BatchNorm layer's running mean and
variance by those of the target images. Nothing is trained and no target label is read.

It is here because every adaptation step of the paper passes target batches through the
network in training mode, which moves BatchNorm's running statistics towards the target as
a side effect (docs/method.md §16): a gain of an adaptation term is the term's own only
where it exceeds what re-estimated statistics give alone.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    """Every BatchNorm layer of `model` (1d, 2d, 3d and SyncBatchNorm)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace every BatchNorm layer's running statistics by their cumulative average over
    `batches` (each (B, 3, H, W) in [0, 1], already on the model's device), computed in
    training mode without gradients: AdaBN (Li et al. 2016). Weights, the layers' momentum
    and the model's `freeze_bn` (models.deeplab.DeepLabV2.train) are restored; the model is
    left in eval mode. Returns the number of images seen. Raises ValueError when `batches`
    is empty (the statistics would be reset to 0 and 1).

    >>> from torch import nn
    >>> net = nn.Sequential(nn.BatchNorm2d(1))
    >>> reestimate_batchnorm(net, [torch.full((2, 1, 1, 1), 3.0), torch.full((2, 1, 1, 1), 5.0)])
    4
    >>> net[0].running_mean   # the average of the two batches' means, 3 and 5
    tensor([4.])
    """
    layers = batchnorm_layers(model)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    momentum, frozen = [m.momentum for m in layers], getattr(model, "freeze_bn", False)
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    if hasattr(model, "freeze_bn"):
        model.freeze_bn = False
    model.train()
    seen = 0
    try:
        for images in batches:
            model(images)
            seen += len(images)
    finally:
        for m, value in zip(layers, momentum, strict=True):
            m.momentum = value
        if hasattr(model, "freeze_bn"):
            model.freeze_bn = frozen
        model.eval()
    if not seen:
        model.load_state_dict(saved)
        raise ValueError("reestimate_batchnorm: no images to estimate BatchNorm statistics from")
    return seen


def target_statistics(model: nn.Module, split, device, batch_size: int = 32) -> int:
    """AdaBN on every image of `split` (a dataset of {"image": (3, H, W), ...} items), in
    order; under torchrun every rank reads the whole split, so all ranks end with the same
    statistics. Returns the number of images. See `reestimate_batchnorm`."""
    loader = DataLoader(split, batch_size=batch_size)
    return reestimate_batchnorm(model, (b["image"].to(device) for b in loader))
