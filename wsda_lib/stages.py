"""The stages of the series behind one dispatcher, each cached as a run.

A stage is a title, the stage whose weights it starts from, and config overrides: which
terms of the objective are on and where the target's weak labels come from (AdaptConfig's
switches). `run_stage(name, cfg, benchmark, seed, device, run_root)` resolves the stage's
config and starting weights, loads the finished run with the same config if there is one and
trains it otherwise, and returns the model and its metrics (scores on source val, target val
and target test). Every stage keeps its final weights: none is selected by a target score.

* source_only: trained on labelled source images only. Target images never pass through the
  network in training mode, so BatchNorm statistics are the source's alone.
* oracle: the same network trained on the target's training labels: the ceiling, unavailable
  in practice (it uses the very labels that domain adaptation does without).
* the adaptation stages start from the cached source-only weights, as in the paper; the
  self-training round (this project's extension) starts from the full UDA recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np

from . import runs
from .analysis import class_presence, pseudo_label_file, pseudo_label_folder, write_pseudo_labels
from .config import PAPER_UDA, Config, check_switches, override, to_dict
from .data.splits import LabelFiles, WithItems
from .data.translated import TranslatedSource
from .engine import set_seed, train_adaptation, train_supervised
from .evaluate import eval_loader, evaluate, presence_scores
from .method.point_supervision import ItemPoints
from .method.weak_classification import Pooling
from .models import build_deeplab

EVAL_SPLITS = ("source_val", "target_val", "target_test")
PAPER_POOLING = {"adapt.pool_positions": None}


@dataclass(frozen=True)
class Stage:
    title: str                        # the row name in tables
    start_from: str | None = None     # whose weights it starts from; None: trained from scratch
    overrides: dict = field(default_factory=dict)  # dotted config field -> value


def _adapt(weak_labels: str, weak_loss: bool, category: bool, pixel: bool,
           self_training: bool = False) -> dict:
    """The switches that make an adaptation stage what it is. Output-space alignment, on in
    every preset, is left to the config, so that `--set adapt.output_alignment=False`
    ablates it in every adaptation stage at once."""
    return {"adapt.weak_labels": weak_labels, "adapt.weak_loss": weak_loss,
            "adapt.category_alignment": category, "adapt.pixel_adaptation": pixel,
            "adapt.self_training": self_training}


STAGES = {
    "source_only": Stage("source-only"),
    "adaptsegnet": Stage("output-space adversarial (AdaptSegNet)", "source_only",
                         _adapt("none", False, False, False)),
    "uda_weak": Stage("UDA: pseudo-weak labels + L_c (N = 8385)", "source_only",
                      _adapt("pseudo", True, False, False)),
    # The paper's pseudo-weak labels, kept to show what the default's departures change.
    "uda_paper_labels": Stage("UDA: pseudo-weak labels + L_c, the paper's labels", "source_only",
                              {**_adapt("pseudo", True, False, False), **PAPER_UDA}),
    "uda_category": Stage("UDA: + category-wise alignment", "source_only",
                          _adapt("pseudo", True, True, False)),
    "uda_pixel": Stage("UDA: + pixel adaptation (FDA stand-in)", "source_only",
                       _adapt("pseudo", True, True, True)),
    "uda_self_training": Stage("UDA: + self-training (this project's extension)", "uda_pixel",
                               _adapt("pseudo", True, True, True, self_training=True)),
    # Human weak labels keep the paper's pooling (N = the map's own size): the area prior of
    # the UDA rows was chosen for pseudo-weak labels, whose negatives are unreliable
    # (docs/method.md §13), and was not measured with human labels.
    "wda_weak": Stage("WDA: image labels + L_c", "source_only",
                      {**_adapt("image", True, False, False), **PAPER_POOLING}),
    # The WDA rows use the whole recipe, like the UDA row they are compared with (uda_pixel).
    "wda_image": Stage("WDA: image labels", "source_only",
                       {**_adapt("image", True, True, True), **PAPER_POOLING}),
    "wda_point": Stage("WDA: one point per class", "source_only",
                       {**_adapt("point", True, True, True), **PAPER_POOLING}),
    "oracle": Stage("oracle (target labels)", overrides={"train.split": "target_train"}),
}


@dataclass
class StageResult:
    model: object
    metrics: dict   # {"history": ..., "<split>": {"miou", "iou", "pixel_acc", "confusion"}}
    run: runs.Run


def stage(name: str) -> Stage:
    """The stage called `name`; an unknown name is an error listing the stages."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; expected one of {sorted(STAGES)}")
    return STAGES[name]


def build_model(cfg: Config, class_set):
    """DeepLab-v2 as cfg.model describes it, with one output per class of `class_set`."""
    m = cfg.model
    return build_deeplab(class_set.num_classes, m.backbone, m.base_width, m.aspp_rates,
                         m.legacy_aspp, m.freeze_bn, m.backbone_weights)


def evaluate_splits(model, benchmark, cfg: Config, device, splits=EVAL_SPLITS) -> dict:
    n = benchmark.class_set.num_classes
    return {s: evaluate(model, eval_loader(benchmark[s], cfg.train.eval_batch_size), n, device)
            for s in splits}


def stage_config(name: str, cfg: Config) -> Config:
    """The config stage `name` trains with: `cfg` with the stage's overrides, checked."""
    resolved = override(cfg, **stage(name).overrides)
    check_switches(resolved)
    a = resolved.adapt
    if stage(name).start_from and not (a.output_alignment or a.weak_loss or a.category_alignment
                                       or a.weak_labels == "point" or a.self_training):
        raise ValueError(f"stage {name!r} would adapt with no target term: it switches on none "
                         f"of its own and adapt.output_alignment is False")
    return resolved


def fixed_fields(name: str) -> set[str]:
    """The config fields that stage `name`, or a stage it starts from, sets itself: a user's
    override of one of them would be silently replaced, so the CLI refuses it."""
    fields = set()
    while name:
        fields |= set(stage(name).overrides)
        name = stage(name).start_from
    return fields


def adaptation_data(cfg: Config, benchmark, model, seed: int, device, work_dir=None):
    """The source and target training splits an adaptation stage trains on, with what its
    switches add: clicked points and pixel pseudo labels on the target items, translated
    images on the source items, and, with adapt.pseudo_weak_from="start", the starting
    model's pseudo-weak labels, frozen. Returns (source, target, metrics of the labels).

    Points are drawn per image as it is read (method.point_supervision); pixel pseudo labels
    are written as PNGs to `work_dir`, by default benchmark.cache_dir/pseudo_labels/<key of
    the weights, config and seed> (analysis.pseudo_label_folder), and read back per item."""
    a = cfg.adapt
    source, target, metrics, extras = benchmark["source_train"], benchmark["target_train"], {}, {}
    if a.weak_labels == "pseudo":
        labels, metrics["pseudo_weak_start"] = pseudo_weak_quality(model, target, cfg, device)
        if a.pseudo_weak_from == "start":
            extras["pseudo_weak"] = labels
    if a.weak_labels == "point":
        extras["points"] = ItemPoints(seed)
    if a.self_training:
        folder = work_dir or pseudo_label_folder(benchmark.cache_dir, model, target,
                                                 to_dict(cfg), seed)
        done = write_pseudo_labels(model, target, a, device, folder, cfg.train.eval_batch_size)
        extras["pseudo_label"] = LabelFiles(len(target), partial(pseudo_label_file, folder))
        metrics.update(pseudo_labels=done["quality"], thresholds=done["thresholds"])
    if extras:
        target = WithItems(target, **extras)
    if a.pixel_adaptation and a.translated_source_dir:
        source = TranslatedSource(source, a.translated_source_dir)
    return source, target, metrics


def pseudo_weak_quality(model, split, cfg: Config, device) -> tuple[np.ndarray, dict]:
    """The model's pseudo-weak labels (N, C) on every image of `split` (eval mode, P_c > T as
    cfg.adapt sets them), and their micro precision and recall (%) against the split's GT
    image labels, which are read only to report this. The model is left in train mode."""
    a = cfg.adapt
    scores, truth = class_presence(model, split, device, Pooling.from_config(a),
                                   cfg.train.eval_batch_size)
    model.train()
    labels = (scores > a.pseudo_threshold).astype(np.float32)
    quality = presence_scores(labels.ravel()[:, None], truth.ravel()[:, None])
    return labels, {k: v[0] for k, v in quality.items()}


def run_config(name: str, cfg: Config, seed: int) -> dict:
    """What keys stage `name`'s run directory: the stage, the seed and its resolved config
    (without the adaptation section for a supervised stage, which does not read it)."""
    config = {"stage": name, "seed": seed, **to_dict(stage_config(name, cfg))}
    if stage(name).start_from is None:
        del config["adapt"]
    return config


def run_stage(name: str, cfg: Config, benchmark, seed: int, device, run_root,
              progress: bool = True) -> StageResult:
    """Load or train stage `name` from the base config `cfg` (a preset, perhaps overridden)
    for `seed`; its starting stage is loaded or trained first."""
    st, stage_cfg = stage(name), stage_config(name, cfg)
    set_seed(seed)  # the initial weights depend on the seed alone, not on what ran before
    model = build_model(stage_cfg, benchmark.class_set)

    def train():
        metrics = {}
        if st.start_from is None:
            t = stage_cfg.train
            val = "source_val" if t.split == "source_train" else "target_val"
            history = train_supervised(model, benchmark[t.split], benchmark[val], t, seed,
                                       device, desc=name, progress=progress)
        else:
            start = run_stage(st.start_from, cfg, benchmark, seed, device, run_root, progress)
            model.load_state_dict(start.model.state_dict())
            model.to(device)
            source, target, metrics = adaptation_data(stage_cfg, benchmark, model, seed, device)
            history = train_adaptation(model, source, target, benchmark["target_val"],
                                       stage_cfg, seed, device, progress=progress, desc=name)
            if stage_cfg.adapt.weak_labels == "pseudo":
                metrics["pseudo_weak_end"] = pseudo_weak_quality(
                    model, benchmark["target_train"], stage_cfg, device)[1]
        metrics.update(history=history, **evaluate_splits(model, benchmark, stage_cfg, device))
        return {"model": model.state_dict()}, metrics

    run = runs.load_or_train(run_root, name, run_config(name, cfg, seed), train)
    if run.loaded:
        model.load_state_dict(run.state["model"])
    model.to(device).eval()
    return StageResult(model, run.metrics, run)
