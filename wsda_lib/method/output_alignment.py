"""Output-space adversarial alignment, inherited from AdaptSegNet (docs/method.md §7).

A fully-convolutional discriminator sees the softmax of the segmentation output, upsampled to
the input size, and tells source from target; the segmentation network is trained to make its
target outputs look like source ones.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from wsda_lib.method.domain import SOURCE_LABEL, TARGET_LABEL, domain_bce


class OutputDiscriminator(nn.Module):
    """Five 4x4 convs with stride 2, widths ndf-2ndf-4ndf-8ndf-1 (ndf = 64 in the paper),
    LeakyReLU(0.2) between them. (B, C, H, W) probabilities -> (B, 1, H/32, W/32) logits."""

    def __init__(self, num_classes: int, ndf: int = 64):
        super().__init__()
        widths = [num_classes, ndf, 2 * ndf, 4 * ndf, 8 * ndf]
        layers = []
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(nn.Conv2d(widths[-1], 1, 4, 2, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, probs):
        return self.net(probs)


def output_probabilities(logits: torch.Tensor, size) -> torch.Tensor:
    """softmax over classes of the logits upsampled to `size`: what the discriminator sees."""
    up = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return torch.softmax(up, dim=1)


def output_adversarial_loss(disc_target: torch.Tensor) -> torch.Tensor:
    """Generator term L_adv = BCE(D(softmax(A_target)), source label), averaged."""
    return domain_bce(disc_target, SOURCE_LABEL)


def output_discriminator_loss(disc_source: torch.Tensor, disc_target: torch.Tensor):
    """½ BCE(D(source), source label) + ½ BCE(D(target), target label)."""
    return 0.5 * (domain_bce(disc_source, SOURCE_LABEL) + domain_bce(disc_target, TARGET_LABEL))
