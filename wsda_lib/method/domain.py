"""The domain-label convention, written down once: source = 0, target = 1.

This is the convention of the paper's released code (BCE with logits). Discriminators learn to
output SOURCE_LABEL on source inputs and TARGET_LABEL on target inputs; the segmentation
network is trained to make its target inputs look like SOURCE_LABEL. Peers differ on this
(AdaptSegNet's own code uses source 0, target 1 as well; ADVENT the same; some use the
opposite), so every loss here takes its labels from this module and a test pins them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SOURCE_LABEL = 0.0
TARGET_LABEL = 1.0


def domain_bce(disc_logits: torch.Tensor, domain_label: float) -> torch.Tensor:
    """Mean BCE-with-logits of discriminator outputs (any shape) against one domain label.

    >>> domain_bce(torch.zeros(2, 1), SOURCE_LABEL)   # log 2: an undecided discriminator
    tensor(0.6931)
    """
    return F.binary_cross_entropy_with_logits(disc_logits,
                                              torch.full_like(disc_logits, domain_label))
