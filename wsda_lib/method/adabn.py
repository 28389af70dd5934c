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
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    """Every BatchNorm layer of `model` (1d, 2d, 3d and SyncBatchNorm)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace every BatchNorm layer's running statistics by their cumulative average over
    `batches` (each (B, 3, H, W) in [0, 1], already on the model's device), computed in
    training mode without gradients: AdaBN (Li et al. 2016), by torch's
    `torch.optim.swa_utils.update_bn`. The average is over batches, each weighing the same:
    the mean of the batches' means and of their (unbiased) variances, which leaves out the
    spread between the batches' means, as every running-statistics estimate does. Weights,
    the layers' momentum and the model's `freeze_bn` (models.deeplab.DeepLabV2.train) are
    restored; the model is left in eval mode. Returns the number of images seen. Raises
    ValueError when `batches` is empty (the statistics would be reset to 0 and 1), with the
    statistics left as they were.

    >>> from torch import nn
    >>> net = nn.Sequential(nn.BatchNorm2d(1))
    >>> reestimate_batchnorm(net, [torch.full((2, 1, 1, 1), 3.0), torch.full((2, 1, 1, 1), 5.0)])
    4
    >>> net[0].running_mean   # the average of the two batches' means, 3 and 5
    tensor([4.])
    """
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []

    def counted():  # one pass, never held in memory at once
        for images in batches:
            seen.append(len(images))
            yield images

    frozen = getattr(model, "freeze_bn", False)
    if hasattr(model, "freeze_bn"):  # DeepLabV2.train would keep BatchNorm in eval mode
        model.freeze_bn = False
    try:
        update_bn(counted(), model)
    finally:
        if hasattr(model, "freeze_bn"):
            model.freeze_bn = frozen
        model.eval()
    if not seen:
        model.load_state_dict(saved)
        raise ValueError("reestimate_batchnorm: no images to estimate BatchNorm statistics from")
    return sum(seen)


def target_statistics(model: nn.Module, split, device, batch_size: int = 32) -> int:
    """AdaBN on every image of `split` (a dataset of {"image": (3, H, W), ...} items), in
    order, `batch_size` at a time; under torchrun every rank reads the whole split, so all
    ranks end with the same statistics. Returns the number of images. See
    `reestimate_batchnorm`; an empty split is a ValueError naming it."""
    if len(split) == 0:
        raise ValueError(f"split {getattr(split, 'name', '?')!r} has no images to estimate "
                         f"BatchNorm statistics from")
    loader = DataLoader(split, batch_size=batch_size)
    return reestimate_batchnorm(model, (b["image"].to(device) for b in loader))
