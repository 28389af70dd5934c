"""The dispatcher: `run_stage(name, cfg, benchmark, seed, device, run_root)` resolves the
stage's config and starting weights, loads the finished run with the same key if there is one
and trains it otherwise, and returns the model and its metrics (scores on source val, target
val and target test). Every stage keeps its final weights: none is selected by a target score.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

from wsda_lib.core import distributed
from wsda_lib.core.config import Config, to_dict
from wsda_lib.core.device import set_seed
from wsda_lib.method.adabn import target_statistics
from wsda_lib.stages.checkpoints import build_model, load_weights
from wsda_lib.stages.checks import check_before_training
from wsda_lib.stages.inputs import adaptation_data, pseudo_weak_quality
from wsda_lib.stages.keys import run_config
from wsda_lib.stages.registry import EVAL_SPLITS, stage, stage_config
from wsda_lib.training import runs
from wsda_lib.training.engine import train_adaptation, train_supervised
from wsda_lib.training.evaluate import eval_loader, evaluate


@dataclass
class StageResult:
    model: object
    metrics: dict   # {"history": ..., "<split>": {"miou", "iou", "pixel_acc", "confusion"}}
    run: runs.Run


def evaluate_splits(model, benchmark, cfg: Config, device, splits=EVAL_SPLITS) -> dict:
    n = benchmark.class_set.num_classes
    return {s: evaluate(model, eval_loader(benchmark[s], cfg.train.eval_batch_size), n, device)
            for s in splits}


def run_stage(name: str, cfg: Config, benchmark, seed: int, device, run_root,
              progress: bool = True, with_target_statistics: bool = False) -> StageResult:
    """Load or train stage `name` from the base config `cfg` (a preset, perhaps overridden)
    for `seed`; its starting stage is loaded or trained first. with_target_statistics: its
    metrics also hold TARGET_STATISTICS (`target_statistics_scores`, cached in the run)."""
    st, stage_cfg = stage(name), stage_config(name, cfg)
    key = run_config(name, cfg, seed, benchmark)
    if not runs.run_dir(run_root, name, key).joinpath("config.json").is_file():
        check_before_training(name, cfg, benchmark, run_root)
    set_seed(seed)  # the initial weights depend on the seed alone, not on what ran before
    model = build_model(stage_cfg, benchmark.class_set)

    def train(resume):
        metrics = {}
        if st.statistics_only:
            start = run_stage(st.start_from, cfg, benchmark, seed, device, run_root, progress)
            model.load_state_dict(start.model.state_dict())
            model.to(device)
            clock = time.perf_counter()
            images = target_statistics(model, benchmark["target_train"], device,
                                       stage_cfg.train.eval_batch_size)
            history = {"statistics_images": images,
                       "phase_seconds": {"statistics": time.perf_counter() - clock}}
        elif st.start_from is None:
            t = stage_cfg.train
            val = "source_val" if t.split == "source_train" else "target_val"
            history = train_supervised(model, benchmark[t.split], benchmark[val], t, seed,
                                       device, desc=name, progress=progress, resume=resume)
        else:
            start = run_stage(st.start_from, cfg, benchmark, seed, device, run_root, progress)
            model.load_state_dict(start.model.state_dict())
            model.to(device)
            clock = time.perf_counter()
            source, target, metrics = adaptation_data(stage_cfg, benchmark, model, seed, device)
            preparation = time.perf_counter() - clock
            history = train_adaptation(model, source, target, benchmark["target_val"],
                                       stage_cfg, seed, device, progress=progress, desc=name,
                                       resume=resume)
            clock = time.perf_counter()
            if stage_cfg.adapt.weak_labels == "pseudo":
                metrics["pseudo_weak_end"] = pseudo_weak_quality(
                    model, benchmark["target_train"], stage_cfg, device)[1]
            history["phase_seconds"]["labels"] = preparation + time.perf_counter() - clock
        clock = time.perf_counter()
        metrics.update(history=history, **evaluate_splits(model, benchmark, stage_cfg, device))
        # the final scores, beside the loop's phases: what `make bench` profiles
        history["phase_seconds"]["final_scores"] = time.perf_counter() - clock
        return {"model": model.state_dict(), "model_config": to_dict(stage_cfg.model),
                "config": to_dict(stage_cfg)}, metrics

    run = runs.load_or_train(run_root, name, key, train,
                             stage_cfg.train.checkpoint_every)
    if run.loaded:
        load_weights(model, run.state, run.dir / "checkpoint.pt", stage_cfg.model)
    model.to(device).eval()
    metrics = run.metrics
    if with_target_statistics:
        metrics = {**metrics, TARGET_STATISTICS: target_statistics_scores(
            model, run.dir, benchmark, stage_cfg, device)}
    return StageResult(model, metrics, run)


TARGET_STATISTICS = "target_statistics"   # the metrics key of `target_statistics_scores`
TARGET_STATISTICS_FILE = "target_statistics.json"


def target_statistics_scores(model, directory: Path, benchmark, cfg: Config, device) -> dict:
    """The scores of `model` on target val and target test ({split: {"miou", "iou"}}, %)
    after its BatchNorm statistics are re-estimated on target train (method.adabn): what
    the run would score with target-domain statistics at evaluation. Computed on a copy (the
    model is untouched) and cached in the run's directory as TARGET_STATISTICS_FILE, whose
    absence or damage only means it is computed again."""
    path = Path(directory) / TARGET_STATISTICS_FILE
    if path.is_file():
        try:
            return runs.read_json(path)
        except ValueError:
            pass
    adapted = copy.deepcopy(model)
    target_statistics(adapted, benchmark["target_train"], device, cfg.train.eval_batch_size)
    scores = evaluate_splits(adapted, benchmark, cfg, device, ("target_val", "target_test"))
    out = {s: {"miou": m["miou"], "iou": m["iou"]} for s, m in scores.items()}
    if distributed.rank() == 0:
        runs.write_json(path, out)
    return out
