"""`wsda gpu-check` (`make gpu-check`): the paper-scale path on a GPU, in one command.

Adaptation steps of DeepLab-v2 ResNet-101 with every term of the UDA recipe on (the stage
"uda_pixel": output-space adversarial L_adv, L_c with pseudo-weak labels, category-wise
alignment L_adv^C, pixel adaptation by the FDA stand-in; docs/method.md §7) at the paper's
sizes (source 1280×720, target 1024×512, batch 1; §8), in fp32 and in bf16, then the
evaluation forward pass with logits upsampled to Cityscapes' native 2048×1024 labels (§10).
Steps per second and peak GPU memory (torch.cuda.max_memory_allocated, reset between parts)
go to bench/gpu.json with the device, torch version and commit.

The code path is the project's own: the config is the paper_gta5 preset with the stage's
switches (stages.stage_config), the network stages.build_model's, the steps
engine.train_adaptation's, the evaluation evaluate.evaluate's. What differs from a real run:
* the data: random images and labels of the right sizes (only speed and memory count);
* the weights: random (model.backbone_weights=None; nothing is downloaded), with BatchNorm's
  running statistics measured once on the random target images (method.adabn), as ImageNet
  weights would bring statistics that normalise (the paper presets' BatchNorm trains in
  training mode with frozen scale and shift, as the released code);
* adapt.lr x LR_SCALE: an untrained ResNet-101 without gradient clipping diverged in a few
  steps at the paper's lr (NaN at step 6 on a CPU, measured with eval-mode BatchNorm before
  the presets followed the released code); a step's work does not depend on the lr;
* adapt.fda_prob = 1: every source image is restyled (the paper's share is 0.5), so that
  every step pays for pixel adaptation.

`--tiny` runs the same functions on the CPU in seconds (the slim backbone at TINY sizes), to
check the command without a GPU. A part that fails (out of memory, a non-finite loss) is
recorded with its error and the next part runs; the JSON is rewritten after every part.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from wsda_lib.core.atomic import write_json
from wsda_lib.core.config import override, preset
from wsda_lib.core.device import NoCuda, resolve_device
from wsda_lib.core.provenance import commit, machine, peak_rss_gib
from wsda_lib.data.classes import protocol
from wsda_lib.data.splits import InMemorySplit, Split
from wsda_lib.method.adabn import reestimate_batchnorm
from wsda_lib.stages import build_model, stage_config, title
from wsda_lib.training.engine import train_adaptation
from wsda_lib.training.evaluate import eval_loader, evaluate

# Relative to the current directory (`make gpu-check` runs from the repository's root).
OUT = Path("bench") / "gpu.json"
TINY_OUT = Path("build") / "gpu-check-tiny.json"  # --tiny never replaces a GPU's record
PRESET, STAGE = "paper_gta5", "uda_pixel"
PRECISIONS = ("fp32", "bf16")
LR_SCALE = 1e-6


@dataclass(frozen=True)
class Sizes:
    """(width, height) in pixels of the source and target training images and of the
    evaluated labels; `steps` and `warmup` default the adaptation steps per precision (timed
    and not); `eval_images` images are evaluated per evaluation part."""

    source: tuple
    target: tuple
    label: tuple
    steps: int
    warmup: int
    eval_images: int


PAPER = Sizes(source=(1280, 720), target=(1024, 512), label=(2048, 1024), steps=30, warmup=5,
              eval_images=5)
TINY = Sizes(source=(128, 64), target=(96, 64), label=(256, 128), steps=2, warmup=1,
             eval_images=1)
TINY_MODEL = {"model.backbone": "slim", "model.base_width": 8}


def check_device(device: str | None, tiny: bool) -> torch.device:
    """The device to measure on: `device` when given, else "cpu" with `tiny` and "cuda"
    without. Raises NoCuda (one line, naming --tiny) when it is a CUDA device and none is
    available."""
    name = device or ("cpu" if tiny else "cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NoCuda("no CUDA device is available; `wsda gpu-check --tiny` runs the same code "
                     "path on the CPU at tiny sizes")
    return resolve_device(name)


def check_overrides(sizes: Sizes, tiny: bool) -> dict:
    """The fields the check changes in the paper_gta5 preset with the stage's switches (the
    module docstring says why): sizes, random weights, lr, FDA share; no evaluation along
    the way, no checkpoints; with `tiny` the slim backbone."""
    base = preset(PRESET)
    return {"data.source_size": sizes.source, "data.target_size": sizes.target,
            "model.backbone_weights": None, "adapt.lr": base.adapt.lr * LR_SCALE,
            "adapt.fda_prob": 1.0, "train.eval_every": 10**9, "train.checkpoint_every": None,
            **(TINY_MODEL if tiny else {})}


def check_config(overrides: dict):
    """config.Config: the paper_gta5 preset with `overrides`, as stage "uda_pixel" trains
    it (every term on, pseudo-weak labels). Raises ValueError/KeyError on a bad override."""
    return stage_config(STAGE, override(preset(PRESET), **overrides))


class _Images(Split):
    """`n` copies of one random image (H, W, 3) uint8 with a random label map of its own
    size (labels may be larger than images, as Cityscapes' native evaluation labels are)."""

    def __init__(self, name, image, label, n, class_set):
        self.name, self.image, self.label_map, self.n = name, image, label, n
        self.class_set = class_set

    def __len__(self):
        return self.n

    def load(self, i):
        return self.image, self.label_map

    def item_name(self, i):
        return f"{self.name}/{i:05d}"


def _random(rng, size, classes: int, n: int = 1):
    """n random images (n, H, W, 3) uint8 and labels (n, H, W) uint8 in 0..classes-1 of
    size (width, height)."""
    w, h = size
    return (rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8),
            rng.integers(0, classes, (n, h, w), dtype=np.uint8))


def synthetic_splits(sizes: Sizes, class_set, seed: int = 0) -> dict:
    """Random splits of the right sizes: "source_train", "target_train" (2 images each),
    "target_val" (1 image, what the loop validates on at its end), and "evaluation" /
    "evaluation_full_input": `sizes.eval_images` images at the target size / at the label
    size, each with labels at sizes.label. Every class covers about 1/C of an image and
    counts as present in its image-level labels."""
    rng, c = np.random.default_rng(seed), class_set.num_classes
    area = np.full(c, 1.0 / c)
    splits = {name: InMemorySplit(name, *_random(rng, size, c, n), class_set, area)
              for name, size, n in (("source_train", sizes.source, 2),
                                    ("target_train", sizes.target, 2),
                                    ("target_val", sizes.target, 1))}
    label = _random(rng, sizes.label, c)[1][0]
    for name, size in (("evaluation", sizes.target), ("evaluation_full_input", sizes.label)):
        image = _random(rng, size, c)[0][0]
        splits[name] = _Images(name, image, label, sizes.eval_images, class_set)
    return splits


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    """Start a part's peak-memory count (CUDA only; a CPU's peak RSS cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _memory(device: torch.device) -> dict:
    """Peak GPU memory in GiB since _reset_peak: allocated by tensors
    (torch.cuda.max_memory_allocated) and held by the caching allocator; None on a CPU."""
    if device.type != "cuda":
        return {"peak_memory_allocated_gib": None, "peak_memory_reserved_gib": None}
    return {"peak_memory_allocated_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3),
            "peak_memory_reserved_gib": round(torch.cuda.max_memory_reserved(device) / 2**30, 3)}


STEP_PHASES_LEFT_OUT = ("evaluation", "checkpoint")
LOSSES = ("seg", "weak", "adv", "adv_cw", "disc")


def adaptation_part(model, splits: dict, cfg, precision: str, steps: int, warmup: int,
                    device: torch.device) -> dict:
    """Time `steps` adaptation steps of engine.train_adaptation (cfg with train.precision =
    `precision`, "fp32" or "bf16"), after `warmup` steps in a call of their own (not timed;
    cuDNN and the allocator settle). Steps per second come from the loop's phase clocks
    (training.loop.PhaseClock: data, forward, backward, discriminators), so the set-up and the
    one-image validation that ends every loop are left out; the call's wall seconds are
    given too. On a GPU a phase holds the queued work it waits for; the last step's
    discriminator update may fall into the validation. Returns the numbers, the last logged
    losses (finite, or the loop would have raised FloatingPointError) and the peak memory."""
    cfg = override(cfg, **{"train.precision": precision})

    def adapt(iterations: int) -> dict:
        return train_adaptation(model, splits["source_train"], splits["target_train"],
                                splits["target_val"],
                                override(cfg, **{"adapt.iterations": iterations}), 0, device,
                                progress=False, desc=f"gpu-check {precision}")

    if warmup:
        adapt(warmup)
    _reset_peak(device)
    start = time.perf_counter()
    history = adapt(steps)
    _sync(device)
    wall = time.perf_counter() - start
    phases = {k: v for k, v in history["phase_seconds"].items()
              if k not in STEP_PHASES_LEFT_OUT}
    seconds = sum(phases.values())
    return {"precision": precision, "steps": steps, "warmup_steps": warmup,
            "steps_per_second": round(steps / seconds, 4),
            "seconds_per_step": round(seconds / steps, 4), "call_seconds": round(wall, 3),
            "phase_seconds_per_step": {k: round(v / steps, 4) for k, v in phases.items()},
            "last_losses": {k: round(history[k][-1], 4) for k in LOSSES if k in history},
            **_memory(device)}


def evaluation_part(model, split, device: torch.device) -> dict:
    """Time evaluate.evaluate over `split` (batch 1, fp32, logits upsampled bilinearly to
    the labels' size, the confusion matrix summed on the CPU, as every score is made), after
    one untimed pass over it. Returns images per second, the image and label sizes
    (width, height) and the peak memory."""
    loader = eval_loader(split, 1)
    classes = split.class_set.num_classes
    model.to(device)
    evaluate(model, loader, classes, device)
    _reset_peak(device)
    start = time.perf_counter()
    scored = evaluate(model, loader, classes, device)
    _sync(device)
    seconds = time.perf_counter() - start
    return {"images": scored["images"], "image_size": list(split.image.shape[1::-1]),
            "label_size": list(split.label_map.shape[::-1]),
            "images_per_second": round(scored["images"] / seconds, 4),
            "seconds_per_image": round(seconds / scored["images"], 4), **_memory(device)}


def _guarded(part) -> dict:
    """part() or, when it fails (CUDA out of memory, a non-finite loss), {"error": the
    exception's name and first line}, so that the parts after it still run (each starts by
    emptying the CUDA cache, _reset_peak)."""
    try:
        return part()
    except (RuntimeError, FloatingPointError) as e:  # torch.cuda.OutOfMemoryError included
        first = (str(e).splitlines() or [""])[0]
        return {"error": f"{type(e).__name__}: {first[:500]}"}


def _device_info(device: torch.device) -> dict:
    cuda = device.type == "cuda"
    return {"device": str(device),
            "device_name": torch.cuda.get_device_name(device) if cuda else machine()["cpu"],
            "torch": torch.__version__, "cuda": torch.version.cuda if cuda else None,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            # fp32 convolutions run in TF32 on Ampere and later unless this is False
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32 if cuda else None}


def header(cfg, overrides: dict, sizes: Sizes, steps: int, warmup: int, tiny: bool,
           device: torch.device) -> dict:
    """What a gpu.json says before its parts: command, date, commit, machine, device, what
    ran (preset, stage, backbone, terms, sizes (width, height), batch, steps, overrides)."""
    a = cfg.adapt
    return {"command": "wsda gpu-check" + (" --tiny" if tiny else ""),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "commit": commit(),
            "machine": machine(), **_device_info(device), "tiny": tiny,
            "preset": PRESET, "stage": STAGE, "stage_title": title(STAGE, preset(PRESET)),
            "backbone": cfg.model.backbone,
            "terms": {"output_alignment": a.output_alignment, "weak_loss": a.weak_loss,
                      "weak_labels": a.weak_labels, "category_alignment": a.category_alignment,
                      "pixel_adaptation": a.pixel_adaptation},
            "sizes": {"source": list(sizes.source), "target": list(sizes.target),
                      "evaluation_label": list(sizes.label)},
            "batch_size": cfg.train.batch_size, "steps": steps, "warmup_steps": warmup,
            "overrides": copy.deepcopy(overrides), "parts": {}}


def run(out: Path | None = None, steps: int | None = None, warmup: int | None = None,
        tiny: bool = False, device: str | None = None) -> dict:
    """Measure every part and write the result to `out` (default bench/gpu.json; with tiny,
    build/gpu-check-tiny.json, so that a CPU run never replaces a GPU's record), rewritten
    after each part; returns it. steps / warmup: adaptation steps per precision, timed and
    not (default PAPER's 30 and 5, TINY's 2 and 1). Parts: "fp32" and "bf16" (adaptation,
    adaptation_part), "evaluation" (images at the target size, labels at the label size,
    as Cityscapes val is scored) and "evaluation_full_input" (images at the label size),
    each evaluation_part. Raises NoCuda without a CUDA device (check_device), ValueError for
    steps < 1 or warmup < 0."""
    device = check_device(device, tiny)
    sizes = TINY if tiny else PAPER
    steps = sizes.steps if steps is None else steps
    warmup = sizes.warmup if warmup is None else warmup
    if steps < 1 or warmup < 0:
        raise ValueError(f"--steps must be >= 1 and --warmup >= 0, got {steps} and {warmup}")
    out = Path(out or (TINY_OUT if tiny else OUT))
    overrides = check_overrides(sizes, tiny)
    cfg = check_config(overrides)
    class_set = protocol(cfg.data.class_protocol).class_set
    splits = synthetic_splits(sizes, class_set)
    torch.manual_seed(0)
    model = build_model(cfg, class_set).to(device)
    target = splits["target_train"]
    # running statistics of two target images: what random weights lack and ImageNet
    # weights bring (method.adabn)
    reestimate_batchnorm(model, [torch.stack([target[i]["image"] for i in range(2)]).to(device)])
    initial = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    result = header(cfg, overrides, sizes, steps, warmup, tiny, device)
    for precision in PRECISIONS:  # each from the same weights
        model.load_state_dict(initial)
        result["parts"][precision] = _guarded(partial(
            adaptation_part, model, splits, cfg, precision, steps, warmup, device))
        write_json(out, result)
    for name in ("evaluation", "evaluation_full_input"):
        result["parts"][name] = _guarded(partial(evaluation_part, model, splits[name], device))
        write_json(out, result)
    result["peak_rss_gib"] = round(peak_rss_gib(), 3)
    result["ok"] = all("error" not in part for part in result["parts"].values())
    write_json(out, result)
    return result


def summary(result: dict) -> str:
    """One line per part: steps/s (or images/s), seconds, peak GPU memory, or the error."""
    lines = [f"{result['command']}: {result['backbone']} on {result['device_name']} "
             f"({result['device']}), torch {result['torch']}, commit {result['commit']}"]
    for name, p in result["parts"].items():
        memory = p.get("peak_memory_allocated_gib")
        shown = "—" if memory is None else f"{memory:.2f} GiB"
        if "error" in p:
            lines.append(f"  {name}: FAILED {p['error']}")
        elif "steps_per_second" in p:
            lines.append(f"  {name}: {p['steps_per_second']:.3f} steps/s "
                         f"({p['seconds_per_step']:.3f} s a step), peak memory {shown}")
        else:
            lines.append(f"  {name}: {p['images_per_second']:.3f} images/s "
                         f"({p['image_size'][0]}×{p['image_size'][1]} -> "
                         f"{p['label_size'][0]}×{p['label_size'][1]}), peak memory {shown}")
    lines.append(f"  peak RSS {result['peak_rss_gib']:.2f} GiB")
    return "\n".join(lines)


def add_parser(sub) -> None:
    """Add the `gpu-check` sub-command and its options to the CLI's subparsers `sub`
    (cli._parser); cli.main dispatches it to `main`."""
    g = sub.add_parser("gpu-check", help="time adaptation steps of DeepLab-v2 ResNet-101 with "
                       "every term on at the paper's sizes, in fp32 and bf16, and the "
                       "2048x1024 evaluation; writes steps/s and peak GPU memory to "
                       "bench/gpu.json")
    g.add_argument("--steps", type=int, default=None, help="timed adaptation steps per "
                   f"precision (default {PAPER.steps}; {TINY.steps} with --tiny)")
    g.add_argument("--warmup", type=int, default=None, help="untimed steps before them "
                   f"(default {PAPER.warmup}; {TINY.warmup} with --tiny)")
    g.add_argument("--tiny", action="store_true", help="the same code path on the CPU at "
                   "tiny sizes (slim backbone), in seconds: checks the command without a GPU")
    g.add_argument("--device", default=None,
                   help="cuda[:N] (default) or cpu (default with --tiny)")
    g.add_argument("--out", type=Path, default=None, help="the JSON (default bench/gpu.json; "
                   "build/gpu-check-tiny.json with --tiny)")


def main(out: Path | None = None, steps: int | None = None, warmup: int | None = None,
         tiny: bool = False, device: str | None = None) -> int:
    """`wsda gpu-check`: run(), print summary() and where the JSON went; exit status 0, or 1
    when a part failed. NoCuda and ValueError propagate (the CLI prints them in one line)."""
    result = run(out, steps, warmup, tiny, device)
    print(summary(result))
    print(f"written to {Path(out or (TINY_OUT if tiny else OUT))}")
    return 0 if result["ok"] else 1
