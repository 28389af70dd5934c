"""Pixel-level adaptation: source images restyled to look like the target.

The paper trains on CycleGAN-translated source images prepared offline (PAPER.md §5). Training
a CycleGAN is out of reach on a CPU, so for the embedded benchmark this module offers a cheap,
honest *stand-in*: the Fourier low-frequency amplitude swap of FDA (Yang & Soatto, CVPR 2020),
which gives a source image the target's global colour and lighting while keeping its content.
It is not what the paper did, and results that use it say so.
"""

from __future__ import annotations

import torch


def fourier_amplitude_swap(source: torch.Tensor, target: torch.Tensor, beta: float = 0.05):
    """FDA: replace the lowest frequencies of the source's amplitude spectrum by the target's.

    source, target (B, 3, H, W) in [0, 1]; the centred square of half-size
    floor(beta · min(H, W)) of the shifted spectrum is swapped, the source phase is kept.
    Returns (B, 3, H, W) clamped to [0, 1]. beta = 0 returns the source unchanged.
    """
    if source.shape != target.shape:
        raise ValueError(f"source {tuple(source.shape)} and target {tuple(target.shape)} "
                         f"images must have the same shape")
    if not 0 <= beta < 0.5:
        raise ValueError(f"fda beta must be in [0, 0.5), got {beta}")
    h, w = source.shape[-2:]
    b = int(beta * min(h, w))
    if b == 0:
        return source
    fs = torch.fft.fftshift(torch.fft.fft2(source), dim=(-2, -1))
    ft = torch.fft.fftshift(torch.fft.fft2(target), dim=(-2, -1))
    amplitude, phase = fs.abs(), fs.angle()
    cy, cx = h // 2, w // 2
    window = (..., slice(cy - b, cy + b + 1), slice(cx - b, cx + b + 1))
    amplitude[window] = ft.abs()[window]
    mixed = torch.fft.ifftshift(torch.polar(amplitude, phase), dim=(-2, -1))
    return torch.fft.ifft2(mixed).real.clamp(0, 1)
