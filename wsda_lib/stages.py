"""The stages of the series behind one dispatcher, each cached as a run.

`run_stage(name, cfg, benchmark, seed, device, run_root)` loads the finished run if one with
the same config exists and trains it otherwise, then returns the model and its metrics (scores
on source val, target val and target test). Every stage keeps its final weights: none is
selected by a score on target labels.

Supervised stages:
* source_only: trained on labelled source images only. Target images never pass through the
  network in training mode, so BatchNorm statistics are the source's alone.
* oracle: the same network trained on the target's training labels: the ceiling, unavailable
  in practice (it uses the very labels that domain adaptation does without).

Adaptation stages start from the cached source-only weights, as in the paper (see STAGES).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from . import runs
from .config import Config, to_dict
from .evaluate import eval_loader, evaluate
from .models import build_deeplab

EVAL_SPLITS = ("source_val", "target_val", "target_test")


@dataclass(frozen=True)
class Stage:
    title: str                      # the row name in tables
    kind: str                       # "supervised" | "adaptation" | "self_training"
    train_split: str = "source_train"
    weak_labels: str = "none"       # where target weak labels come from (adaptation only)
    output_alignment: bool = True   # λ_adv term on
    weak_loss: bool = False         # λ_c term on
    category_alignment: bool = False  # λ_cw term on
    pixel_adaptation: bool = False  # FDA stand-in for CycleGAN-translated source images
    start_from: str = "source_only"  # whose weights adaptation starts from


STAGES = {
    "source_only": Stage("source-only", "supervised"),
    "adaptsegnet": Stage("output-space adversarial (AdaptSegNet)", "adaptation"),
    "uda_weak": Stage("UDA: pseudo-weak labels + L_c", "adaptation", weak_labels="pseudo",
                      weak_loss=True),
    "uda_category": Stage("UDA: + category-wise alignment", "adaptation",
                          weak_labels="pseudo", weak_loss=True, category_alignment=True),
    "uda_pixel": Stage("UDA: + pixel adaptation (FDA stand-in)", "adaptation",
                       weak_labels="pseudo", weak_loss=True, category_alignment=True,
                       pixel_adaptation=True),
    "uda_self_training": Stage("UDA: + self-training (this project's extension)",
                               "self_training", weak_labels="pseudo", weak_loss=True,
                               category_alignment=True, pixel_adaptation=True,
                               start_from="uda_pixel"),
    "wda_weak": Stage("WDA: image labels + L_c", "adaptation", weak_labels="image",
                      weak_loss=True),
    # The WDA rows use the whole recipe, like the UDA row they are compared with (uda_pixel).
    "wda_image": Stage("WDA: image labels", "adaptation", weak_labels="image", weak_loss=True,
                       category_alignment=True, pixel_adaptation=True),
    "wda_point": Stage("WDA: one point per class", "adaptation", weak_labels="point",
                       weak_loss=True, category_alignment=True, pixel_adaptation=True),
    "oracle": Stage("oracle (target labels)", "supervised", train_split="target_train"),
}


@dataclass
class StageResult:
    model: object
    metrics: dict   # {"history": ..., "<split>": {"miou", "iou", "pixel_acc", "confusion"}}
    run: runs.Run


def build_model(cfg: Config, num_classes: int):
    m = cfg.model
    return build_deeplab(num_classes, m.backbone, m.base_width, m.aspp_rates, m.legacy_aspp,
                         m.freeze_bn, m.backbone_weights)


def evaluate_splits(model, benchmark, cfg: Config, device, splits=EVAL_SPLITS) -> dict:
    n = benchmark.class_set.num_classes
    return {s: evaluate(model, eval_loader(benchmark[s], cfg.train.eval_batch_size), n, device)
            for s in splits}


def stage_config(stage: Stage, cfg: Config) -> Config:
    """The config a stage actually trains with: switched-off terms get weight 0."""
    import copy

    cfg = copy.deepcopy(cfg)
    if stage.kind != "supervised":
        a = cfg.adapt
        a.lambda_adv = a.lambda_adv if stage.output_alignment else 0.0
        if not stage.weak_loss:
            a.lambda_c = a.lambda_c_human = 0.0
        a.lambda_cw = a.lambda_cw if stage.category_alignment else 0.0
    return cfg


@torch.no_grad()
def make_pseudo_labels(model, split, cfg: Config, device):
    """Self-training labels for a target split: the model's predictions, filtered by per-class
    confidence thresholds and by its own pseudo-weak labels. Returns (labels (N, H, W) uint8,
    quality against the ground truth, thresholds)."""
    import torch.nn.functional as F

    from .method.self_training import class_thresholds, filter_pseudo_labels, pseudo_label_quality
    from .method.weak_classification import pseudo_weak_labels

    model.eval()
    confidences, predictions, weak = [], [], []
    for batch in DataLoader(split, batch_size=cfg.train.eval_batch_size):
        logits, _ = model(batch["image"].to(device))
        up = F.interpolate(logits, size=batch["label"].shape[-2:], mode="bilinear",
                           align_corners=False)
        conf, pred = torch.softmax(up, 1).max(1)
        confidences.append(conf.cpu())
        predictions.append(pred.cpu())
        weak.append(pseudo_weak_labels(logits, cfg.adapt.pseudo_threshold,
                                       cfg.adapt.smooth_max_r).cpu())
    conf, pred, weak = torch.cat(confidences), torch.cat(predictions), torch.cat(weak)
    thresholds = class_thresholds(conf, pred, split.class_set.num_classes,
                                  cfg.adapt.st_quantile, cfg.adapt.st_cap)
    pseudo = filter_pseudo_labels(conf, pred, thresholds, weak)
    raw = filter_pseudo_labels(conf, pred, torch.zeros_like(thresholds), torch.ones_like(weak))
    quality = {"raw": pseudo_label_quality(raw, split.labels),
               "confidence_only": pseudo_label_quality(
                   filter_pseudo_labels(conf, pred, thresholds, torch.ones_like(weak)),
                   split.labels),
               "filtered": pseudo_label_quality(pseudo, split.labels)}
    return pseudo.numpy().astype(np.uint8), quality, thresholds.tolist()


def run_stage(name: str, cfg: Config, benchmark, seed: int, device, run_root,
              progress: bool = True) -> StageResult:
    from .engine import set_seed, train_adaptation, train_supervised
    from .method.point_supervision import sample_points

    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; expected one of {sorted(STAGES)}")
    stage = STAGES[name]
    base_cfg, cfg = cfg, stage_config(stage, cfg)
    num_classes = benchmark.class_set.num_classes
    set_seed(seed)  # the initial weights depend on the seed alone, not on what ran before
    model = build_model(cfg, num_classes)
    run_config = {"stage": name, "seed": seed, **to_dict(cfg)}
    if stage.kind == "supervised":  # adaptation settings do not change a supervised run
        del run_config["adapt"]

    def train():
        metrics = {}
        if stage.kind == "supervised":
            curve_split = "source_val" if stage.train_split == "source_train" else "target_val"
            history = train_supervised(model, benchmark[stage.train_split],
                                       benchmark[curve_split], cfg.train, num_classes, seed,
                                       device, desc=name, progress=progress)
        else:
            start = run_stage(stage.start_from, base_cfg, benchmark, seed, device, run_root,
                              progress)
            model.load_state_dict(start.model.state_dict())
            target = benchmark["target_train"]
            points = pseudo = None
            if (stage.weak_labels == "point" or stage.kind == "self_training") and \
                    not hasattr(target, "labels"):
                raise ValueError(f"stage {name!r} needs the whole target split in memory, "
                                 f"which only the embedded benchmark provides so far")
            if stage.weak_labels == "point":
                points = sample_points(target.labels, target.weak_labels, seed)
            if stage.kind == "self_training":
                pseudo, metrics["pseudo_labels"], metrics["thresholds"] = make_pseudo_labels(
                    model, target, cfg, device)
            source = benchmark["source_train"]
            if stage.pixel_adaptation and cfg.adapt.translated_source_dir:
                from .data.translated import TranslatedSource

                source = TranslatedSource(source, cfg.adapt.translated_source_dir)
            history = train_adaptation(
                model, source, target, benchmark["target_val"], cfg,
                num_classes, seed, device, weak_labels=stage.weak_labels,
                pixel_adaptation=stage.pixel_adaptation, target_points=points,
                target_pseudo_labels=pseudo, progress=progress, desc=name)
        metrics.update(history=history, **evaluate_splits(model, benchmark, cfg, device))
        return {"model": model.state_dict()}, metrics

    run = runs.load_or_train(run_root, name, run_config, train)
    if run.loaded:
        model.load_state_dict(run.state["model"])
    model.to(device).eval()
    return StageResult(model, run.metrics, run)
