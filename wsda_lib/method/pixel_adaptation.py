"""Pixel-level adaptation: source images restyled to look like the target.

The paper trains on CycleGAN-translated source images prepared offline (docs/method.md §7). Training
a CycleGAN is out of reach on a CPU, so for the embedded benchmark this module offers a cheap,
honest *stand-in*: the Fourier low-frequency amplitude swap of FDA (Yang & Soatto, CVPR 2020),
which gives a source image the target's global colour and lighting while keeping its content.
It is not what the paper did, and results that use it say so.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from wsda_lib.core.config import check_range

# The random colour jitter of the "colour" control, before it is scaled to FDA's strength:
# brightness, contrast and saturation factors in [1 - x, 1 + x], a hue shift in [-h, h].
JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}


def fourier_amplitude_swap(source: torch.Tensor, target: torch.Tensor, beta: float = 0.05):
    """FDA: replace the lowest frequencies of the source's amplitude spectrum by the target's.

    source, target (B, 3, H, W) in [0, 1]; the centred square of half-size
    b = floor(beta · min(H, W)) of the shifted spectrum, (2b + 1) x (2b + 1) frequencies, is
    swapped and the source phase kept: FDA's own rule, so a beta whose b is 0 (0.01 at
    64 px) still swaps the DC term, the image's mean colour. beta in (0, 0.5]
    (adapt.fda_beta, config.RANGES). Returns (B, 3, H, W) clamped to [0, 1].
    """
    if source.shape != target.shape:
        raise ValueError(f"source {tuple(source.shape)} and target {tuple(target.shape)} "
                         f"images must have the same shape")
    check_range("adapt.fda_beta", beta)
    h, w = source.shape[-2:]
    b = int(beta * min(h, w))
    fs = torch.fft.fftshift(torch.fft.fft2(source), dim=(-2, -1))
    ft = torch.fft.fftshift(torch.fft.fft2(target), dim=(-2, -1))
    amplitude, phase = fs.abs(), fs.angle()
    cy, cx = h // 2, w // 2
    window = (..., slice(cy - b, cy + b + 1), slice(cx - b, cx + b + 1))
    amplitude[window] = ft.abs()[window]
    mixed = torch.fft.ifftshift(torch.polar(amplitude, phase), dim=(-2, -1))
    return torch.fft.ifft2(mixed).real.clamp(0, 1)


def _jitter(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One image (3, H, W) in [0, 1] with JITTER's adjustments, four draws of `generator`."""
    u, j = torch.rand(4, generator=generator).tolist(), JITTER
    x = TF.adjust_brightness(image, 1 + j["brightness"] * (2 * u[0] - 1))
    x = TF.adjust_contrast(x, 1 + j["contrast"] * (2 * u[1] - 1))
    x = TF.adjust_saturation(x, 1 + j["saturation"] * (2 * u[2] - 1))
    return TF.adjust_hue(x, j["hue"] * (2 * u[3] - 1))


def colour_jitter(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Photometric augmentation: each image of (B, 3, H, W) in [0, 1] jittered in
    brightness, contrast, saturation and hue by factors drawn from JITTER with `generator`
    (four draws per image). Returns (B, 3, H, W) in [0, 1]. What self-training's student
    sees with adapt.st_augment (this project's extension, docs/method.md §16)."""
    return torch.stack([_jitter(image, generator) for image in images]).clamp(0, 1)


def colour_jitter_like(source: torch.Tensor, restyled: torch.Tensor,
                       generator: torch.Generator) -> torch.Tensor:
    """The control for restyling: each source image jittered in colour at random (torchvision's
    brightness, contrast, saturation and hue adjustments, factors from JITTER drawn with
    `generator`: four draws per image), its change then scaled so that its mean absolute
    change equals that of `restyled`, the same image restyled towards the target (both
    already clamped to [0, 1]). Same strength, no direction; the final clamp to [0, 1] can
    only shrink the jitter's change, so it is at most FDA's. source, restyled (B, 3, H, W)
    in [0, 1]; returns (B, 3, H, W) in [0, 1]."""
    out = torch.empty_like(source)
    for i, image in enumerate(source):
        change = _jitter(image, generator) - image
        scale = (restyled[i] - image).abs().mean() / change.abs().mean().clamp_min(1e-8)
        out[i] = (image + scale * change).clamp(0, 1)
    return out


def restyle_source(source: torch.Tensor, target: torch.Tensor, prob: float, beta: float,
                   generator: torch.Generator, translated: torch.Tensor | None = None,
                   mode: str = "fda"):
    """Pixel adaptation of one source batch: each image is replaced, with probability `prob`,
    by its restyled version, beside the originals (docs/method.md §7).

    source (B, 3, H, W) and target (B, 3, H', W') images in [0, 1]. The restyled version is
    `translated` (B, 3, H, W), images translated offline (CycleGAN in the paper), when given,
    and otherwise the FDA stand-in against this batch's target images (resized to H×W when
    the domains' sizes differ). One draw of `generator` per image decides, whichever is used.
    mode "colour" (adapt.restyle) replaces the chosen images by `colour_jitter_like` of their
    restyled versions instead: the control with the same strength and no target direction.
    Returns (B, 3, H, W).
    """
    check_range("adapt.fda_prob", prob), check_range("adapt.restyle", mode)
    restyle = torch.rand(len(source), generator=generator) < prob
    if translated is not None and mode == "fda":
        return torch.where(restyle.to(source.device).view(-1, 1, 1, 1), translated, source)
    chosen = restyle.nonzero().flatten().to(source.device)
    if len(chosen) == 0:
        return source
    if translated is not None:
        out = source.clone()
        out[chosen] = colour_jitter_like(source[chosen], translated[chosen], generator)
        return out
    # The FDA stand-in only for the images drawn (each image's spectrum is its own).
    target = target[chosen]
    if target.shape[-2:] != source.shape[-2:]:  # paper scale: 1280x720 vs 1024x512
        target = F.interpolate(target, size=source.shape[-2:], mode="bilinear",
                               align_corners=False)
    out = source.clone()
    out[chosen] = fourier_amplitude_swap(source[chosen], target, beta)
    if mode == "colour":
        out[chosen] = colour_jitter_like(source[chosen], out[chosen], generator)
    return out
