"""The stages of the series behind one dispatcher, each cached as a run.

`run_stage("source_only", cfg, benchmark, seed, device, run_root)` loads the finished run if
one with the same config exists and trains it otherwise, then returns the model and its
metrics (scores on source val, target val and target test).

* source_only: trained on labelled source images only. Target images never pass through the
  network in training mode, so BatchNorm statistics are the source's alone.
* oracle: the same network trained on the target's training labels: the ceiling, unavailable
  in practice (it uses the very labels that domain adaptation does without).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import DataLoader

from . import runs
from .config import Config, to_dict
from .evaluate import evaluate
from .models import build_deeplab

EVAL_SPLITS = ("source_val", "target_val", "target_test")

# stage -> (split it trains on, split its learning curve is drawn on)
SUPERVISED_STAGES = {
    "source_only": ("source_train", "source_val"),
    "oracle": ("target_train", "target_val"),
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
    return {s: evaluate(model, DataLoader(benchmark[s], batch_size=cfg.train.eval_batch_size),
                        n, device) for s in splits}


def run_stage(stage: str, cfg: Config, benchmark, seed: int, device, run_root,
              progress: bool = True) -> StageResult:
    from .engine import train_supervised  # the engine imports tqdm; keep it off the import path

    if stage not in SUPERVISED_STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {sorted(SUPERVISED_STAGES)}")
    train_split, curve_split = SUPERVISED_STAGES[stage]
    num_classes = benchmark.class_set.num_classes
    model = build_model(cfg, num_classes)
    run_config = {"stage": stage, "seed": seed, **to_dict(cfg)}

    def train():
        history = train_supervised(model, benchmark[train_split], benchmark[curve_split],
                                   cfg.train, num_classes, seed, device, desc=stage,
                                   progress=progress)
        metrics = {"history": history, **evaluate_splits(model, benchmark, cfg, device)}
        return {"model": model.state_dict()}, metrics

    run = runs.load_or_train(run_root, stage, run_config, train)
    if run.loaded:
        model.load_state_dict(run.state["model"])
    model.to(device).eval()
    return StageResult(model, run.metrics, run)
