"""The weak-label study: why UDA's pseudo-weak labels collapse, which fix helps, and how
long and how strongly category-wise alignment should run (docs/method.md §13).

`wsda study` (`make study`) trains every probe below for one seed on the default preset,
caches each as a run (a re-run only re-reads them), and writes figures/study.json with its
figures. Every choice reads **target val**; target test is written down beside it and never
compared. It is not part of `make reproduce`: the series reads the committed study.

1. References: source-only and output-space alignment alone (λ_c = 0).
2. Drivers of the collapse: the paper's UDA weak-label stage (L_c on pseudo-weak labels
   plus output-space alignment), with one factor changed at a time: the threshold T, λ_c,
   the dropout before pooling, the pooling's area prior, online re-labelling, the
   adversarial term.
3. Candidate fixes. The probe of 2 or 3 with the best target val mIoU becomes the
   weak-label part of the default recipe.
4. With it: λ_cw x adaptation length for the category-wise alignment stage.
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from wsda_lib.core.atomic import write_json
from wsda_lib.core.config import PAPER_UDA, Config, override, preset
from wsda_lib.core.device import resolve_device
from wsda_lib.data import load
from wsda_lib.method.weak_classification import Pooling, image_class_scores
from wsda_lib.stages import run_stage, stage_config
from wsda_lib.teaching import plots
from wsda_lib.training.evaluate import class_presence, presence_scores

SEED = 0
THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)
# (name, stage, overrides relative to the paper's recipe, why it is measured)
DRIVERS = [
    ("paper: online, T = 0.2", "uda_paper_labels", {}, "the paper's recipe"),
    ("T = 0.5", "uda_weak", {"adapt.pseudo_threshold": 0.5}, "threshold"),
    ("T = 0.8", "uda_weak", {"adapt.pseudo_threshold": 0.8}, "threshold"),
    ("λ_c = 0.001", "uda_weak", {"adapt.lambda_c": 0.001}, "weight of L_c"),
    ("λ_c = 0.1", "uda_weak", {"adapt.lambda_c": 0.1}, "weight of L_c"),
    ("no dropout", "uda_weak", {"adapt.weak_dropout": 0.0}, "dropout before pooling"),
    ("area prior of the paper's map (N = 8385)", "uda_weak", {"adapt.pool_positions": 8385},
     "pooling's area prior"),
    # N = 8385 moves every pooled score by -log(8385 / 128): for the labels that is T = 0.9425
    # with the paper's pooling; this probe has those labels without the shift inside L_c.
    ("T = 0.9425: N = 8385's labels, L_c without its shift", "uda_weak",
     {"adapt.pseudo_threshold": 0.9425}, "separates N = 8385's two effects"),
    ("frozen labels of the source-only model", "uda_weak",
     {"adapt.pseudo_weak_from": "start"}, "online re-labelling"),
    ("no output-space alignment", "uda_weak", {"adapt.output_alignment": False},
     "adversarial term"),
]
# Adaptation-wide settings: when the chosen recipe has one, the output-space baseline is
# re-measured with it, so that L_c is judged against a baseline trained the same way.
SHARED = ("adapt.freeze_bn",)
CANDIDATES = [
    ("L_c on the source too", "uda_weak", {"adapt.source_weak_loss": True},
     "calibrates P_c where image labels exist"),
    ("labels from BatchNorm's running statistics", "uda_weak",
     {"adapt.pseudo_weak_from": "online_eval"},
     "target-batch statistics inflate P_c before any step"),
    ("BatchNorm statistics frozen (running statistics; affine weights still trained)",
     "uda_weak",
     {"adapt.freeze_bn": True}, "no target-batch statistics anywhere"),
    ("BatchNorm frozen, L_c on the source too", "uda_weak",
     {"adapt.freeze_bn": True, "adapt.source_weak_loss": True}, "both"),
    ("logits centred over classes before pooling", "uda_weak", {"adapt.pool_centred": True},
     "no free shift of every class's logit"),
    ("centred pooling, BatchNorm frozen", "uda_weak",
     {"adapt.pool_centred": True, "adapt.freeze_bn": True}, "both"),
]
LAMBDA_CW = (0.001, 0.01)
LENGTHS = (1, 3)  # adaptation lengths, in multiples of the preset's adapt.iterations
MIN_GAIN = 0.5  # a longer schedule must beat a shorter one by this much (mIoU) to be chosen


def _summary(result) -> dict:
    """A probe's numbers: target val (chosen on) and test (written down) mIoU, and the end
    of its logged history: pseudo-weak-label precision/recall, mean P_c of present and
    absent classes, mean logit, category discriminator accuracy (means of the logged
    windows of the last 100 steps), and the mean logit of the first logged window."""
    m, h = result.metrics, result.metrics.get("history", {})
    out = {"target_val_miou": m["target_val"]["miou"], "target_test_miou":
           m["target_test"]["miou"], "target_val_iou": m["target_val"]["iou"]}
    last = [i for i, it in enumerate(h.get("iteration", [])) if it > h["iteration"][-1] - 100]
    for key in ("pseudo_precision", "pseudo_recall", "score_present", "score_absent",
                "mean_logit", "disc_cw_accuracy"):
        if key in h:
            out[key] = float(np.mean([h[key][i] for i in last]))
    if "mean_logit" in h:  # the first logged window (the first log_every steps)
        out["mean_logit_start"] = h["mean_logit"][0]
    return out


def _presence_f1(predicted, truth) -> tuple[float, float, float]:
    """Micro presence precision, recall (%, NaN when undefined) and F1 (%, 0 when
    undefined) of 0/1 arrays of any one shape."""
    ps = presence_scores(np.ravel(predicted)[:, None], np.ravel(truth)[:, None])
    p, r = ps["precision"][0], ps["recall"][0]
    pz, rz = np.nan_to_num(p), np.nan_to_num(r)
    return p, r, float(2 * pz * rz / (pz + rz)) if pz + rz > 0 else 0.0


def threshold_sweep(model, split, device, adapt) -> dict:
    """Presence precision, recall and F1 (%) of the model's P_c > T on `split` for every T
    of THRESHOLDS, micro-averaged, and the T of the best F1 (overall and per class)."""
    scores, truth = class_presence(model, split, device, Pooling.from_config(adapt))
    rows = []
    for t in THRESHOLDS:
        p, r, f1 = _presence_f1(scores > t, truth)
        rows.append({"T": float(t), "precision": p, "recall": r, "f1": f1})
    best = max(rows, key=lambda row: row["f1"])
    per_class = [float(THRESHOLDS[int(np.argmax([_presence_f1(scores[:, c] > t, truth[:, c])[2]
                                                 for t in THRESHOLDS]))])
                 for c in range(truth.shape[1])]
    return {"sweep": rows, "best_T": best["T"], "best_f1": best["f1"],
            "per_class_best_T": per_class}


@torch.no_grad()
def training_mode_presence(model, split, device, adapt, batch_size: int) -> dict:
    """Presence precision and recall (%) of the model's pseudo-weak labels on `split` as
    the paper's recipe computes them before its first adaptation step: in training mode, so
    that BatchNorm normalises each batch of `batch_size` target images by its own
    statistics (on a copy: the model's running statistics are not touched)."""
    copy = deepcopy(model).to(device).train()
    pool = Pooling.from_config(adapt)
    scores = torch.cat([image_class_scores(copy(b["image"].to(device))[0], pool).cpu()
                        for b in DataLoader(split, batch_size=batch_size, drop_last=True)])
    truth = np.asarray(split.weak_labels)[:len(scores)]
    ps = presence_scores((scores.numpy() > adapt.pseudo_threshold).ravel()[:, None],
                         truth.ravel()[:, None])
    return {"T": adapt.pseudo_threshold, "precision": ps["precision"][0],
            "recall": ps["recall"][0]}


def score_distribution(model, split, device, adapt) -> dict:
    """P_c (%) of every (image, class) pair of `split`, split by whether the class is truly
    present (GT image label) or absent: lists for a histogram."""
    scores, truth = class_presence(model, split, device, Pooling.from_config(adapt))
    return {"present": (100 * scores[truth > 0]).round(2).tolist(),
            "absent": (100 * scores[truth == 0]).round(2).tolist()}


def run_study(preset_name: str = "default", run_dir: Path = Path("runs"),
              out: Path = Path("figures"), device="cpu", progress: bool = True,
              log=print) -> dict:
    """Train (or re-read) every probe and write out/study.json and out/study_*.png.
    Returns the study as a dict (see the module docstring for its parts)."""
    base = override(preset(preset_name), **PAPER_UDA)  # probes change the paper's
    bench = load(base.data, run_dir / "data", verbose=progress)
    models = run_dir / "models"

    def run(name, stage, changes, cfg: Config = base):
        cfg = override(cfg, **changes)
        stage_config(stage, cfg)           # refuse a bad probe before anything trains
        log(f"study: {name} ({stage}, {changes or 'as configured'})")
        return run_stage(stage, cfg, bench, SEED, device, models, progress)

    source_only = run("source-only", "source_only", {})
    study = {"preset": preset_name, "seed": SEED, "chosen_on": "target_val",
             "references": {"source-only": _summary(source_only),
                            "output-space alignment only": _summary(
                                run("output-space alignment only", "adaptsegnet", {}))}}
    study["source_only_presence"] = threshold_sweep(source_only.model, bench["target_val"],
                                                    device, base.adapt)
    study["source_only_presence"]["training_mode"] = training_mode_presence(
        source_only.model, bench["target_val"], device, base.adapt, base.train.batch_size)
    t_f1 = study["source_only_presence"]["best_T"]
    candidates = CANDIDATES + [
        (f"T = {t_f1:g}, the source-only model's best presence F1, running statistics",
         "uda_weak", {"adapt.pseudo_threshold": t_f1, "adapt.pseudo_weak_from": "online_eval"},
         "threshold chosen once on target val, in eval mode like the labels")]
    study["drivers"], study["candidates"] = [], []
    results = {}
    for part, probes in (("drivers", DRIVERS), ("candidates", candidates)):
        for name, stage, changes, why in probes:
            results[name] = run(name, stage, changes)
            study[part].append({"name": name, "overrides": changes, "why": why,
                                **_summary(results[name])})
    paper = results[DRIVERS[0][0]]
    study["paper_history"] = _history(paper.metrics["history"])
    study["score_distribution"] = {
        "source-only": score_distribution(source_only.model, bench["target_val"], device,
                                          base.adapt),
        "paper: online, T = 0.2": score_distribution(paper.model, bench["target_val"], device,
                                                     base.adapt)}
    chosen = max(study["drivers"] + study["candidates"], key=lambda r: r["target_val_miou"])
    study["chosen_weak_labels"] = {"name": chosen["name"], "overrides": chosen["overrides"]}
    shared = {k: v for k, v in chosen["overrides"].items() if k in SHARED}
    if shared:
        study["references"]["output-space alignment only, as chosen"] = _summary(
            run("output-space alignment only, as chosen", "adaptsegnet", shared))
    study["grid"] = []
    recipe = override(base, **chosen["overrides"])
    for length in (k * base.adapt.iterations for k in LENGTHS):
        for lambda_cw in LAMBDA_CW:
            changes = {"adapt.lambda_cw": lambda_cw, "adapt.iterations": length}
            name = f"category-wise alignment, λ_cw = {lambda_cw:g}, {length} steps"
            summary = _summary(run(name, "uda_category", changes, recipe))
            study["grid"].append({"lambda_cw": lambda_cw, "iterations": length, **summary})
    study["chosen_grid"] = choose_grid(study["grid"])
    _write(study, out, bench.class_set.names)
    return study


def choose_grid(grid: list[dict]) -> dict:
    """The grid point with the best target val mIoU, except that a longer schedule is chosen
    only when it beats the best shorter one by more than MIN_GAIN (one seed cannot resolve
    less, and each step costs time)."""
    best = None
    for length in sorted({g["iterations"] for g in grid}):
        row = max((g for g in grid if g["iterations"] == length),
                  key=lambda g: g["target_val_miou"])
        if best is None or row["target_val_miou"] > best["target_val_miou"] + MIN_GAIN:
            best = row
    return {"lambda_cw": best["lambda_cw"], "iterations": best["iterations"]}


def _history(h: dict) -> dict:
    """The logged pseudo-weak-label quantities of a run, for the collapse figure."""
    keys = ("iteration", "pseudo_precision", "pseudo_recall", "pseudo_tp", "pseudo_labelled",
            "pseudo_true", "score_present", "score_absent", "mean_logit")
    return {k: h[k] for k in keys if k in h}


def _write(study: dict, out: Path, class_names) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "study.json", study)
    for name, fig in (("study_collapse", plots.weak_label_tracking(study["paper_history"],
                                                                   class_names)),
                      ("study_scores", plots.score_histograms(study["score_distribution"])),
                      ("study_probes", plots.study_bars(study))):
        plots.save_figure(fig, name, out)


def main(preset_name: str = "default", run_dir: Path = Path("runs"),
         out: Path = Path("figures"), device: str = "auto") -> int:
    """`wsda study`: run the study and print what it chose; returns the exit status."""
    study = run_study(preset_name, run_dir, out, resolve_device(device))
    print(f"study: weak labels {study['chosen_weak_labels']['name']!r}, "
          f"{study['chosen_grid']}; written to {out / 'study.json'}")
    return 0
