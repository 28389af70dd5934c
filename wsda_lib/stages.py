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
* adabn trains nothing: the source-only weights with BatchNorm's running statistics
  re-estimated on target train (method.adabn), the side effect every adaptation step has;
  no_target_term and the other "control:" stages each differ from a step only in what the
  step's claim is about (docs/method.md §15-§16).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from wsda_lib.core import distributed
from wsda_lib.core.config import (
    PAPER_UDA,
    AdaptConfig,
    Config,
    check_switches,
    key_config,
    override,
    to_dict,
)
from wsda_lib.core.device import set_seed
from wsda_lib.data import SPLIT_NAMES, synthetic
from wsda_lib.data.checks import check_split_files
from wsda_lib.data.files import image_size
from wsda_lib.data.splits import InMemorySplit, LabelFiles, WithItems
from wsda_lib.data.translated import TranslatedSource
from wsda_lib.method.adabn import target_statistics
from wsda_lib.method.category_alignment import category_features
from wsda_lib.method.objective import Discriminators, LossWeights
from wsda_lib.method.output_alignment import output_probabilities
from wsda_lib.method.point_supervision import ItemPoints, sample_points
from wsda_lib.method.weak_classification import Pooling
from wsda_lib.models import build_deeplab
from wsda_lib.training import runs
from wsda_lib.training.engine import train_adaptation, train_supervised
from wsda_lib.training.evaluate import class_presence, eval_loader, evaluate, presence_scores
from wsda_lib.training.pseudo_labels import (
    PSEUDO_LABEL_RECORD,
    pseudo_label_file,
    pseudo_label_folder,
    write_pseudo_labels,
)

EVAL_SPLITS = ("source_val", "target_val", "target_test")
PAPER_POOLING = {"adapt.pool_positions": None}
# The self-training round chosen on target val (mechanisms.ST_CANDIDATES, figures/mechanisms.md):
# class-balanced, labels with target statistics, augmented student; config.AdaptConfig's
# defaults. Spelled out, so that the controls stay this round whatever the defaults.
CHOSEN_SELF_TRAINING = {"adapt.st_cap": 1.0, "adapt.st_label_statistics": "target",
                        "adapt.st_augment": True}


@dataclass(frozen=True)
class Stage:
    title: str                        # the row name in tables
    start_from: str | None = None     # whose weights it starts from; None: trained from scratch
    overrides: dict = field(default_factory=dict)  # dotted config field -> value
    # True: trains nothing; the starting weights with BatchNorm's running statistics
    # re-estimated on target train (method.adabn), the baseline every UDA step must beat.
    statistics_only: bool = False
    # True: a control that runs the adaptation loop with every target term off, so target
    # batches pass through BatchNorm in training mode and nothing else reads them. Any other
    # adaptation stage with no target term is refused (`stage_config`).
    no_target_term: bool = False


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
    "adabn": Stage("source-only + target BatchNorm statistics (AdaBN)", "source_only",
                   statistics_only=True),
    "adaptsegnet": Stage("output-space adversarial (AdaptSegNet)", "source_only",
                         _adapt("none", False, False, False)),
    "uda_weak": Stage("UDA: pseudo-weak labels + L_c (N = 8385)", "source_only",
                      _adapt("pseudo", True, False, False)),
    # The paper's pseudo-weak labels, kept to show what the default's departures change.
    "uda_paper_labels": Stage("UDA: pseudo-weak labels + L_c, the paper's pooling (N = h·w)",
                              "source_only",
                              {**_adapt("pseudo", True, False, False), **PAPER_UDA}),
    "uda_category": Stage("UDA: + category-wise alignment", "source_only",
                          _adapt("pseudo", True, True, False)),
    "uda_pixel": Stage("UDA: + pixel adaptation (FDA stand-in), full recipe", "source_only",
                       _adapt("pseudo", True, True, True)),
    "uda_self_training": Stage("UDA: + self-training, class-balanced, colour-augmented (this "
                               "project's extension)", "uda_pixel",
                               _adapt("pseudo", True, True, True, self_training=True)),
    # Human weak labels keep the paper's pooling (N = the map's own size): the area prior of
    # the UDA rows was chosen for pseudo-weak labels, whose negatives are unreliable
    # (docs/method.md §13), and was not measured with human labels.
    "wda_weak": Stage("WDA: image labels + L_c", "source_only",
                      {**_adapt("image", True, False, False), **PAPER_POOLING}),
    # The WDA rows use the whole recipe, like the UDA row they are compared with (uda_pixel).
    "wda_image": Stage("WDA: image labels, full recipe", "source_only",
                       {**_adapt("image", True, True, True), **PAPER_POOLING}),
    "wda_point": Stage("WDA: one point per class, full recipe", "source_only",
                       {**_adapt("point", True, True, True), **PAPER_POOLING}),
    # The weak-label filter where it can act: a person's image labels filter the pixel
    # pseudo labels (UDA's pseudo-weak labels say "present" for nearly every class).
    "wda_self_training": Stage("WDA: image labels, full recipe + self-training (this "
                               "project's extension)", "wda_image",
                               {**_adapt("image", True, True, True, self_training=True),
                                **PAPER_POOLING}),
    "oracle": Stage("oracle (target labels)", overrides={"train.split": "target_train"}),
    # Controls (`make ablation`, ablation.py): each rules out the obvious other explanation
    # of one step's effect.
    "no_target_term": Stage("control: the adaptation loop with no target term (target "
                            "batches through BatchNorm only)", "source_only",
                            {**_adapt("none", False, False, False),
                             "adapt.output_alignment": False}, no_target_term=True),
    "uda_pixel_continued": Stage("control: UDA + pixel, 1000 more steps without self-training",
                                 "uda_pixel", _adapt("pseudo", True, True, True)),
    # The round chosen on target val (docs/method.md §16) with its pseudo labels weighted 0:
    # its steps and its student's augmentation alone.
    "uda_self_training_no_labels": Stage("control: the chosen self-training round with its "
                                         "pseudo labels weighted 0 (λ_st = 0)", "uda_pixel",
                                         {**_adapt("pseudo", True, True, True,
                                                   self_training=True),
                                          **CHOSEN_SELF_TRAINING, "adapt.lambda_st": 0.0}),
    "uda_weak_all_present": Stage("control: L_c with every class labelled present",
                                  "source_only", _adapt("present", True, False, False)),
    "wda_category": Stage("WDA: image labels + L_c + category-wise alignment", "source_only",
                          {**_adapt("image", True, True, False), **PAPER_POOLING}),
    "uda_colour": Stage("control: UDA + random colour augmentation of FDA's strength",
                        "source_only", {**_adapt("pseudo", True, True, True),
                                        "adapt.restyle": "colour"}),
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
                         m.legacy_aspp, m.freeze_bn, m.backbone_weights, m.freeze_bn_affine)


def model_weights(state, path) -> dict:
    """The network's state_dict in what a checkpoint file holds: a wsda checkpoint
    ({"model": state_dict, ...}), a {"state_dict": ...} or a bare state_dict. Keys prefixed
    "module." (as DataParallel and DDP save them) lose the prefix. Errors name the file and
    say what it holds."""
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        weights = state["model"]
    elif isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        weights = state["state_dict"]
    elif isinstance(state, dict) and state and all(torch.is_tensor(v) for v in state.values()):
        weights = state
    else:
        held = (f"a dict with keys {sorted(map(str, state))[:8]}" if isinstance(state, dict)
                else type(state).__name__)
        raise ValueError(f"checkpoint {path} holds {held}; expected a wsda checkpoint (a dict "
                         f"whose 'model' is the network's state_dict) or a bare state_dict")
    if weights and all(k.startswith("module.") for k in weights):
        weights = {k[len("module."):]: v for k, v in weights.items()}
    return weights


def _shape_of(weights: dict, key: str, dim: int = 0):
    return tuple(weights[key].shape)[dim] if key in weights else None


def load_weights(model, state, path, model_cfg) -> None:
    """Load the network weights of checkpoint `state` (read from `path`) into `model`, built
    from `model_cfg` (config.ModelConfig). A checkpoint that does not fit fails with an error
    naming the file and the settings that differ (number of classes, backbone, width, ASPP
    rates), read from the checkpoint's stored model config or, for a bare state_dict,
    from its tensors' shapes. A checkpoint whose floating-point tensors (weights or buffers)
    hold NaN or inf fails with an error naming the file and the tensors: such a model
    predicts class 0 everywhere and would be scored without a word."""
    weights = model_weights(state, path)
    nonfinite = sorted(k for k, v in weights.items() if torch.is_tensor(v)
                       and v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if nonfinite:
        raise ValueError(f"checkpoint {path}: {len(nonfinite)} tensor(s) hold NaN or inf "
                         f"values, e.g. {nonfinite[:3]}; it cannot be evaluated or trained "
                         f"from (a run that diverged, or a damaged file)")
    expected = model.state_dict()
    wrong = sorted(k for k in expected if k not in weights
                   or tuple(weights[k].shape) != tuple(expected[k].shape))
    extra = sorted(k for k in weights if k not in expected)
    if not wrong and not extra:
        model.load_state_dict(weights)
        return
    differ = []
    key = "classifier.branches.0.weight"
    if _shape_of(weights, key) != _shape_of(expected, key):
        differ.append(f"number of classes: checkpoint {_shape_of(weights, key)}, model "
                      f"{_shape_of(expected, key)}")
    saved = state.get("model_config") if isinstance(state, dict) else None
    if isinstance(saved, dict):
        mine = to_dict(model_cfg)
        differ += [f"model.{k}: checkpoint {saved[k]!r}, config {mine[k]!r}"
                   for k in ("backbone", "base_width", "aspp_rates", "legacy_aspp")
                   if k in saved and json_form(saved[k]) != json_form(mine[k])]
    else:
        stem = "backbone.stem.0.weight"
        if _shape_of(weights, stem) != _shape_of(expected, stem):
            differ.append(f"width of the first layer (model.base_width, or the backbone): "
                          f"checkpoint {_shape_of(weights, stem)}, model "
                          f"{_shape_of(expected, stem)}")
        branches = {k.split(".")[2] for k in weights if k.startswith("classifier.branches.")}
        want = {k.split(".")[2] for k in expected if k.startswith("classifier.branches.")}
        if len(branches) != len(want):
            differ.append(f"ASPP branches (model.aspp_rates, model.legacy_aspp): checkpoint "
                          f"{len(branches)}, model {len(want)}")
    detail = "; ".join(differ) if differ else (
        f"{len(wrong)} tensor(s) missing or of another shape, e.g. {wrong[:3]}, "
        f"{len(extra)} unexpected, e.g. {extra[:3]} (another backbone?)")
    raise ValueError(f"checkpoint {path} does not fit the model built from the config: {detail}")


def json_form(value):
    return json.loads(json.dumps(value))


def evaluate_splits(model, benchmark, cfg: Config, device, splits=EVAL_SPLITS) -> dict:
    n = benchmark.class_set.num_classes
    return {s: evaluate(model, eval_loader(benchmark[s], cfg.train.eval_batch_size), n, device)
            for s in splits}


def stage_config(name: str, cfg: Config) -> Config:
    """The config stage `name` trains with: `cfg` with the stage's overrides, checked."""
    resolved = override(cfg, **stage(name).overrides)
    check_switches(resolved)
    st = stage(name)
    if st.start_from and not (st.no_target_term or st.statistics_only) and \
            not LossWeights.from_config(resolved.adapt).target_terms():
        raise ValueError(f"stage {name!r} would adapt with no target term: every term that "
                         f"reads the target is switched off or has weight 0 "
                         f"(method.objective.LossWeights)")
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

    Points are drawn per image as it is read (method.point_supervision; the embedded
    benchmark keeps its whole-split draw); pixel pseudo labels
    are written as PNGs to `work_dir`, by default benchmark.cache_dir/pseudo_labels/<key of
    the weights, config and seed> (training.pseudo_labels.pseudo_label_folder), and read back
    per item."""
    a = cfg.adapt
    source, target, metrics, extras = benchmark["source_train"], benchmark["target_train"], {}, {}
    if a.weak_labels == "pseudo":
        labels, metrics["pseudo_weak_start"] = pseudo_weak_quality(model, target, cfg, device)
        if a.pseudo_weak_from == "start":
            extras["pseudo_weak"] = labels
    if a.weak_labels == "point":  # clicks given (data.points), else drawn from the labels
        extras["points"] = (target.points if getattr(target, "points", None) is not None else
                            sample_points(target.labels_array(), target.weak_labels, seed)
                            if isinstance(target, InMemorySplit) else ItemPoints(seed))
    if a.self_training:
        # keyed by the trained weights and pseudo_label_key: the same on every rank,
        # whatever the re-estimation's last bits
        folder = Path(work_dir or pseudo_label_folder(benchmark.cache_dir, model, target,
                                                      pseudo_label_key(cfg), seed))

        def write():  # the labeller is made only when the labels are not written yet
            labeller = model if (folder / PSEUDO_LABEL_RECORD).is_file() else \
                pseudo_label_model(model, cfg, target, device)
            return write_pseudo_labels(labeller, target, a, device, folder,
                                       cfg.train.eval_batch_size)

        # Under torchrun every rank holds the same weights: the first rank to take the lock
        # beside the folder writes the labels, the others wait on the lock (not in a
        # collective, which would time out on a large split), then read its record.
        done = distributed.once(folder.parent / f".{folder.name}.lock", write)
        extras["pseudo_label"] = LabelFiles(len(target), partial(pseudo_label_file, folder))
        metrics.update(pseudo_labels=done["quality"], thresholds=done["thresholds"])
    if extras:
        target = WithItems(target, **extras)
    if a.pixel_adaptation and a.translated_source_dir:
        source = TranslatedSource(source, a.translated_source_dir)
    return source, target, metrics


def pseudo_label_key(cfg: Config) -> dict:
    """The config part of the key of self-training's pseudo-label folder
    (training.pseudo_labels.pseudo_label_folder): config.key_config, and the BatchNorm
    statistics the labels are made with (adapt.st_label_statistics) whatever its default,
    since key_config leaves out a field at its default and a default can change: labels made
    with running statistics are never reused for a round that makes them with target statistics."""
    return {**key_config(cfg), "st_label_statistics": cfg.adapt.st_label_statistics}


def pseudo_label_model(model, cfg: Config, split, device):
    """The network self-training's pixel pseudo labels of `split` are made with:
    `model` itself (adapt.st_label_statistics "running": its BatchNorm running statistics,
    as trained), or a copy with those statistics re-estimated on `split` ("target",
    method.adabn). `model` is never changed."""
    if cfg.adapt.st_label_statistics == "running":
        return model
    labeller = copy.deepcopy(model)
    target_statistics(labeller, split, device, cfg.train.eval_batch_size)
    return labeller


def pseudo_weak_quality(model, split, cfg: Config, device) -> tuple[np.ndarray, dict]:
    """The model's pseudo-weak labels (N, C) on every image of `split` (eval mode, P_c > T as
    cfg.adapt sets them), and their micro precision and recall (%) against the split's GT
    image labels, which are read only to report this. The model is left in train mode."""
    a = cfg.adapt
    scores, truth = class_presence(model, split, device, Pooling.from_config(a),
                                   cfg.train.eval_batch_size)
    model.train()
    labels = (scores > a.pseudo_threshold).astype(np.float32)
    if truth is None:  # a target without image-level labels: nothing to measure against
        return labels, {}
    quality = presence_scores(labels.ravel()[:, None], truth.ravel()[:, None])
    return labels, {k: v[0] for k, v in quality.items()}


def run_config(name: str, cfg: Config, seed: int, benchmark=None) -> dict:
    """What keys stage `name`'s run directory: the stage, the seed, its resolved config
    as config.key_config gives it (without the adaptation section for a supervised stage,
    which does not read it), on the embedded benchmark the fingerprint of its generator and
    parameters (of `benchmark`, a loaded one, or else of the calibrated benchmark), and,
    under torchrun, the number of processes, which multiplies the effective batch. Raises
    ValueError for an embedded benchmark without a fingerprint."""
    resolved = stage_config(name, cfg)
    config = {"stage": name, "seed": seed, **key_config(resolved)}
    if stage(name).start_from is None or stage(name).statistics_only:  # reads no adapt field
        del config["adapt"]
    elif resolved.adapt.self_training:  # against fixed values, whatever their defaults
        for field_name, reference in SELF_TRAINING_REFERENCE.items():
            value = getattr(resolved.adapt, field_name)
            if field_name in SELF_TRAINING_KEYED_AS or value != reference:
                config["adapt"][field_name] = value
            else:
                config["adapt"].pop(field_name, None)
    else:  # the self-training fields change nothing here
        for field_name in SELF_TRAINING_REFERENCE:
            config["adapt"].pop(field_name, None)
        config["adapt"].update(SELF_TRAINING_KEYED_AS)
    if cfg.data.dataset == "embedded":  # runs on older images of the benchmark are not reused
        if benchmark is not None and not getattr(benchmark, "fingerprint", None):
            raise ValueError(f"stage {name!r}: the embedded benchmark given has no fingerprint "
                             f"of its generator's parameters; load it with data.load, which "
                             f"sets one, so that its runs are keyed by the images they saw")
        config["benchmark"] = (synthetic.fingerprint(synthetic.DOMAINS) if benchmark is None
                               else benchmark.fingerprint)
    if cfg.data.dataset == "folders":  # an edited class file or CSV is another run
        config["files"] = folder_files_digest(cfg.data)
        if stage(name).start_from is None:  # supervised: target train's CSVs are not read
            for field_name in ("image_labels", "points"):
                config["data"].pop(field_name, None)
                config["files"].pop(field_name, None)
    if cfg.data.dataset != "embedded" and benchmark is not None:  # files changed in place
        if getattr(benchmark, "data_files", None) is None:  # once per loaded benchmark
            benchmark.data_files = data_files_digest(benchmark, cfg.data)
        config["data_files"] = benchmark.data_files
    if distributed.world_size() > 1:  # a single process keeps the keys runs always had
        config["world_size"] = distributed.world_size()
    return config


def data_files_digest(benchmark, data_cfg) -> str:
    """A digest of every file the benchmark's splits read (images, labels, and the
    translated source images of adapt.translated_source_dir are keyed by their own folder):
    each file's path relative to its dataset root, size and modification time. Part of the
    key of a run on files (folders and the real datasets), so that an image or a label
    changed in place is another run, never a cached one served for data that changed."""
    roots = [Path(r).resolve() for r in (data_cfg.source_root, data_cfg.target_root) if r]
    files = set()
    for name in SPLIT_NAMES:
        for pair in getattr(benchmark[name], "pairs", []):
            files.update(Path(p).resolve() for p in pair if p is not None)
    h = hashlib.sha256()
    for path in sorted(files):
        shown = next((str(path.relative_to(r)) for r in roots if path.is_relative_to(r)),
                     path.name)
        st = path.stat()
        h.update(f"{shown}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


# The adaptation fields only self-training reads, with the values they had when this rule was
# written (2026-12). A stage that does not self-train is keyed with those that keys always
# held (SELF_TRAINING_KEYED_AS) at these values, whatever the config says, so that neither an
# override for a self-training stage nor a change of their defaults retrains the stages it
# starts from. A stage that self-trains is keyed with those at their values, and with the
# others only where they differ from these values (not from the defaults): a change of a
# default re-keys no cached run and never lets a run of the old default stand for the new.
SELF_TRAINING_REFERENCE = {"lambda_st": 1.0, "st_quantile": 0.5, "st_cap": 0.9,
                           "st_label_statistics": "running", "st_augment": False}
SELF_TRAINING_FIELDS = tuple(SELF_TRAINING_REFERENCE)
SELF_TRAINING_KEYED_AS = {k: SELF_TRAINING_REFERENCE[k] for k in ("lambda_st", "st_quantile",
                                                                   "st_cap")}


def folder_files_digest(data_cfg) -> dict:
    """{field: sha256 of the file's bytes} of the class file and the CSVs a folder dataset's
    config names (data.classes, or target_root/classes.json; data.image_labels; data.points):
    part of a run's key, as the files decide what it trains on."""
    from wsda_lib.data.folders import CLASS_FILE, READY_MADE
    classes = data_cfg.classes or str(Path(data_cfg.target_root or ".") / CLASS_FILE)
    named = {"classes": classes, "image_labels": data_cfg.image_labels,
             "points": data_cfg.points}
    return {k: hashlib.sha256(Path(v).read_bytes()).hexdigest()[:16] if v not in READY_MADE
            else v for k, v in named.items() if v and (v in READY_MADE or Path(v).is_file())}


def chain(name: str) -> list[str]:
    """Stage `name` and the stages it starts from, first to train first."""
    names = []
    while name:
        names.insert(0, name)
        name = stage(name).start_from
    return names


def check_chain_uses(name: str, cfg: Config) -> None:
    """Settings that no stage of `name`'s chain reads are refused by name rather than
    silently ignored: adapt.translated_source_dir without a stage that restyles source images
    (pixel adaptation), the same for adapt.restyle other than "fda", and a self-training
    field away from its default (SELF_TRAINING_FIELDS) without a stage that self-trains.
    Raises ValueError."""
    a = cfg.adapt
    restyles = any(stage_config(each, cfg).adapt.pixel_adaptation for each in chain(name))
    if stage_config(name, cfg).adapt.restyle != "fda" and not restyles:
        raise ValueError(f"adapt.restyle={stage_config(name, cfg).adapt.restyle!r}: no stage "
                         f"of {' -> '.join(chain(name))} uses pixel adaptation, so no image "
                         f"would be restyled; choose a stage with it (uda_pixel, uda_colour, "
                         f"...) or leave the field at 'fda'")
    self_trains = any(stage_config(each, cfg).adapt.self_training for each in chain(name))
    changed = [f"adapt.{f}" for f in SELF_TRAINING_FIELDS
               if getattr(a, f) != getattr(AdaptConfig(), f)]
    if changed and not self_trains:
        raise ValueError(f"{', '.join(changed)}: no stage of {' -> '.join(chain(name))} "
                         f"self-trains, so the setting would not be read; choose a stage with "
                         f"self-training (uda_self_training, wda_self_training) or leave it at "
                         f"its default")
    if a.translated_source_dir and not restyles:
        raise ValueError(f"adapt.translated_source_dir={a.translated_source_dir!r}: no stage "
                         f"of {' -> '.join(chain(name))} uses pixel adaptation, so the "
                         f"translated images would not be read; choose a stage with it "
                         f"(uda_pixel, wda_image, ...) or leave the field unset")


def check_before_training(name: str, cfg: Config, benchmark, run_root) -> None:
    """Everything that can be checked before stage `name` (and the stages it starts from)
    trains: every stage's resolved config, the files the configs name (initial weights,
    translated source images), every split's image formats and the label values of the
    evaluation splits and, when a stage reads them, target train (data.checks; recorded in
    the cache folder once passed), that every module of each stage runs at the configured
    image sizes (`check_sizes`), and that `run_root` can be written and has room for the
    checkpoints. Errors (ValueError, DatasetError, FileNotFoundError) name the stage, field, file or
    folder."""
    # Target train's labels are read by an adaptation stage (the weak labels' quality, WDA's
    # image labels and points) and by the oracle; source train's by the typical class areas.
    reads_target = any(stage(each).start_from or stage_config(each, cfg).train.split ==
                       "target_train" for each in chain(name))
    for split in SPLIT_NAMES:
        labels = split in EVAL_SPLITS or (split == "target_train" and reads_target)
        check_split_files(benchmark[split], split, labels, benchmark.cache_dir)
    for each in chain(name):
        stage_cfg = stage_config(each, cfg)
        check_sizes(each, stage_cfg, benchmark)
        weights = stage_cfg.model.backbone_weights
        if weights and not Path(weights).is_file():
            raise FileNotFoundError(f"model.backbone_weights={weights!r}: no such file "
                                    f"(the ImageNet initialisation of stage {each!r})")
        a = stage_cfg.adapt
        if stage(each).start_from and a.pixel_adaptation and a.translated_source_dir:
            TranslatedSource(benchmark["source_train"], a.translated_source_dir).check()
    check_target_labels(name, cfg, benchmark["target_train"])
    runs.check_writable(run_root, need_bytes=_checkpoint_bytes(stage_config(name, cfg),
                                                               benchmark.class_set))


def check_target_labels(name: str, cfg: Config, target) -> None:
    """Each stage of `name`'s chain has the target train labels it trains on: pixel labels
    for the oracle, image-level labels for WDA (data.image_labels, or label maps), points or
    label maps to draw them from for WDA with points. Raises ValueError naming the stage and
    the field."""
    for each in chain(name):
        c = stage_config(each, cfg)
        if c.train.split == "target_train" and not stage(each).start_from and \
                not target.has_pixel_labels:
            raise ValueError(f"stage {each!r} trains on target train's pixel labels, and "
                             f"target train has none (no ann_dir/train in data.target_root="
                             f"{cfg.data.target_root!r})")
        if stage(each).start_from and c.adapt.weak_labels in ("image", "point") and \
                not target.has_image_labels:
            raise ValueError(f"stage {each!r} trains on target train's image-level labels, "
                             f"and target train has none: give data.image_labels (a CSV of "
                             f"image,class[,class...]) or label maps in ann_dir/train")
        if stage(each).start_from and c.adapt.weak_labels == "point" and \
                target.points is None and not target.has_pixel_labels:
            raise ValueError(f"stage {each!r} trains on clicked points, and target train has "
                             f"neither data.points (a CSV of image,class,x,y) nor label maps "
                             f"to draw them from")


def input_size(split) -> tuple[int, int]:
    """(H, W) of the images `split` feeds the network: its resize size, else the first image
    file's size (from the header), else the first in-memory image's."""
    size = getattr(split, "size", None)
    if size:
        return int(size[1]), int(size[0])
    if getattr(split, "pairs", None):
        width, height = image_size(split.pairs[0][0])
        return height, width
    return tuple(split[0]["image"].shape[-2:])


def _size_fields(cfg: Config, domain: str) -> str:
    if cfg.data.dataset == "embedded":
        return f"data.height={cfg.data.height}, data.width={cfg.data.width}"
    size = cfg.data.source_size if domain == "source" else cfg.data.target_size
    return f"data.{domain}_size={size}"


def check_sizes(name: str, cfg: Config, benchmark) -> None:
    """Stage `name`'s network and discriminators run on both domains' images at the sizes
    they are read at, checked on the meta device (shapes only: no memory, no arithmetic).
    Raises ValueError naming the stage, the module, the size and the config fields that set
    it; e.g. the output-space discriminator's five 4x4 stride-2 convolutions need 32 px a
    side."""
    a = cfg.adapt
    with torch.device("meta"):
        model = build_model(override(cfg, **{"model.backbone_weights": None}),
                            benchmark.class_set).eval()
        discs = Discriminators(LossWeights.from_config(a), benchmark.class_set.num_classes,
                               model.feature_dim, a.output_disc_width, a.category_disc_hidden
                               ) if stage(name).start_from else None
        for domain in ("source", "target"):
            h, w = input_size(benchmark[f"{domain}_train"])
            what = "the segmentation network"
            try:
                logits, feats = model(torch.empty(2, 3, h, w))
                if discs is not None and discs.output is not None:
                    what = ("the output-space discriminator (adapt.output_alignment; five 4x4 "
                            "convolutions of stride 2 need at least 32 px a side)")
                    discs.output(output_probabilities(logits, (h, w)))
                if discs is not None and discs.category is not None:
                    what = "the category-wise discriminators (adapt.category_alignment)"
                    discs.category(category_features(logits, feats))
            except RuntimeError as e:
                raise ValueError(f"stage {name!r}: {what} cannot run on {domain} images of "
                                 f"{w}x{h} px (width x height; {_size_fields(cfg, domain)}): "
                                 f"{e}") from None


def _checkpoint_bytes(cfg: Config, class_set) -> int:
    """About the disk a run of `cfg` needs: its resume checkpoint (the network with its
    optimiser's state, the discriminators with Adam's two), a temporary copy of it while it
    is written, and the final checkpoint. Sizes from modules built on the meta device, which
    allocates nothing."""
    def nbytes(module):
        return sum(p.numel() * p.element_size() for p in module.parameters())

    with torch.device("meta"):
        model = build_model(override(cfg, **{"model.backbone_weights": None}), class_set)
        discs = Discriminators(LossWeights.from_config(cfg.adapt), class_set.num_classes,
                               model.feature_dim, cfg.adapt.output_disc_width,
                               cfg.adapt.category_disc_hidden)
    states = 3 if cfg.train.optimizer == "adam" else 2
    resume = states * nbytes(model) + 3 * nbytes(discs)
    return 2 * resume + nbytes(model) + 2**20


def run_stage(name: str, cfg: Config, benchmark, seed: int, device, run_root,
              progress: bool = True, with_target_statistics: bool = False) -> StageResult:
    """Load or train stage `name` from the base config `cfg` (a preset, perhaps overridden)
    for `seed`; its starting stage is loaded or trained first. with_target_statistics: its
    metrics also hold TARGET_STATISTICS (`target_statistics_scores`, cached in the run)."""
    st, stage_cfg = stage(name), stage_config(name, cfg)
    if not runs.run_dir(run_root, name, run_config(name, cfg, seed, benchmark)).joinpath(
            "config.json").is_file():
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

    run = runs.load_or_train(run_root, name, run_config(name, cfg, seed, benchmark), train,
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
