"""Each mechanism against the control that isolates it (`wsda mechanisms`, part of
`make study`; docs/method.md §16).

Every adaptation step passes target batches through BatchNorm in training mode, so a step's
gain over source-only mixes its term's effect with target BatchNorm statistics. This record
measures the terms themselves, on the default preset, and writes figures/mechanisms.json
(with its commit and date) and figures/mechanisms_strengths.png:

1. Strengths. Each adversarial term over a log grid of weights (the paper's were set for
   batch 1 x 120k steps of a pretrained ResNet-101; here a from-scratch slim network trains
   1000 steps at batch 8), seed 0, beside the same loop with the term off (its isolating
   control). For every point: target val mIoU (what the rule reads), the term's
   discriminator accuracy over the last 100 steps, the domain separation of the category
   features (analysis.domain_separation, mean over classes, target val against source val),
   and target val mIoU with target BatchNorm statistics (method.adabn). Target test is
   written down, never read by a rule.
2. Confirmation. The chosen strength of each term against the term off, over SEEDS on
   target val (results.paired_test; reported, not a verdict), then judged on target test.
   Beside it, over SEEDS: AdaBN against source-only, and output-space alignment at the
   paper's weight against AdaBN and against the loop with no target term (verdicts on
   target test), and whether target statistics at evaluation help the full UDA recipe
   (decided on target val).
3. Self-training candidates (this project's extension), seed 0, target val, beside the same
   stage continued as long without self-training and the chosen round with its pseudo labels
   weighted 0 (its steps and augmentation alone); and the weak-label filter where it can act
   (WDA's pixel pseudo labels filtered by a person's image labels, measured).

THE RULES, fixed before any of these runs were looked at:
* a term's strength: starting from the term off, walk the grid from weak to strong and move
  to a point only when its target val mIoU beats the current choice by more than MIN_GAIN
  (one seed cannot resolve less). "Off" chosen means that no strength helped on val.
* self-training: the candidate with the best target val mIoU at seed 0.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsda_lib.core.atomic import atomic_write, write_json
from wsda_lib.core.config import override, preset
from wsda_lib.core.device import resolve_device
from wsda_lib.core.provenance import run_metadata
from wsda_lib.data import load
from wsda_lib.experiments.study import MIN_GAIN
from wsda_lib.records.results import paired_test
from wsda_lib.stages import CHOSEN_SELF_TRAINING, TARGET_STATISTICS, run_stage, stage_config
from wsda_lib.teaching import plots
from wsda_lib.teaching.analysis import domain_separation
from wsda_lib.training.pseudo_labels import write_pseudo_labels

SEED = 0
SEEDS = (0, 1, 2)          # the confirmation of a chosen strength, on target val
GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


@dataclass(frozen=True)
class Term:
    name: str           # as the series names the step
    field: str          # the weight's config field
    stage: str          # the stage whose recipe the term completes
    off: str            # the same loop with the term off: its isolating control
    accuracy: str       # the history key of its discriminator's accuracy
    paper: float        # the paper's weight


TERMS = (
    Term("output-space alignment", "adapt.lambda_adv", "adaptsegnet", "no_target_term",
         "disc_accuracy", 0.001),
    Term("category-wise alignment", "adapt.lambda_cw", "uda_category", "uda_weak",
         "disc_cw_accuracy", 0.001),
)

# (name, overrides of uda_self_training). Each names every candidate field, so that a
# candidate is the same run whatever the defaults are.
ST_FIELDS = {"adapt.st_cap": 0.9, "adapt.st_label_statistics": "running",
             "adapt.st_augment": False}
ST_CANDIDATES = (
    ("median per class, capped at 0.9 (the series before)", {}),
    ("class-balanced: median per class, no cap (CBST)", {"adapt.st_cap": 1.0}),
    ("class-balanced, labels with target BatchNorm statistics",
     {"adapt.st_cap": 1.0, "adapt.st_label_statistics": "target"}),
    ("class-balanced, target statistics, colour-augmented student",
     {"adapt.st_cap": 1.0, "adapt.st_label_statistics": "target", "adapt.st_augment": True}),
)


# The weak-label filter where it can act: the WDA recipe's pixel pseudo labels on target train,
# filtered by a person's image labels, class-balanced (measured, not trained on).
WDA_FILTER = {"adapt.st_cap": 1.0}


def summary(result, bench, device, accuracy_key: str | None = None) -> dict:
    """One run's numbers: target val and test mIoU (%), target val mIoU with target
    BatchNorm statistics, the mean over classes of the category features' domain separation
    (analysis.domain_separation on target val and source val), and, when `accuracy_key`
    names a logged discriminator accuracy, its mean (%) over the logged windows of the last
    100 steps."""
    m, h = result.metrics, result.metrics.get("history", {})
    classes = range(bench.class_set.num_classes)
    separation = domain_separation(result.model, bench, device, classes)
    out = {"target_val_miou": m["target_val"]["miou"],
           "target_test_miou": m["target_test"]["miou"],
           "target_val_miou_target_statistics": m[TARGET_STATISTICS]["target_val"]["miou"],
           "separation": float(np.mean(list(separation.values()))),
           "separation_per_class": {str(c): v for c, v in separation.items()}}
    if accuracy_key and accuracy_key in h:
        last = [i for i, it in enumerate(h["iteration"]) if it > h["iteration"][-1] - 100]
        out["disc_accuracy"] = 100 * float(np.mean([h[accuracy_key][i] for i in last]))
    return out


def choose_strength(off: dict, points: list[dict]) -> float:
    """The module's strength rule: from the term off (strength 0), walk `points` (each with
    "strength" and "target_val_miou") from weak to strong, moving only to a point that beats
    the current choice by more than MIN_GAIN. Returns the chosen strength (0.0: off).

    >>> off = {"target_val_miou": 50.0}
    >>> choose_strength(off, [{"strength": 0.01, "target_val_miou": 50.4},
    ...                       {"strength": 0.1, "target_val_miou": 51.0}])
    0.1
    >>> choose_strength(off, [{"strength": 0.01, "target_val_miou": 50.4}])
    0.0
    """
    best, strength = off["target_val_miou"], 0.0
    for p in sorted(points, key=lambda p: p["strength"]):
        if p["target_val_miou"] > best + MIN_GAIN:
            best, strength = p["target_val_miou"], p["strength"]
    return strength


# (what, stage, its control), each judged over SEEDS on target test by the series' rule
BATCHNORM_VERDICTS = (
    ("Target BatchNorm statistics alone (AdaBN, nothing trained)", "adabn", "source_only"),
    ("Output-space alignment (the paper's λ_adv), against AdaBN", "adaptsegnet", "adabn"),
    ("Output-space alignment (the paper's λ_adv), against the same loop with no target term",
     "adaptsegnet", "no_target_term"),
)
# Whether target statistics at evaluation belong in the recipe: decided on target val over
# SEEDS for the full UDA recipe, chosen when the paired test says "helps".
STATISTICS_STAGE = "uda_pixel"


def _batchnorm(run) -> dict:
    """What BatchNorm statistics alone account for, over SEEDS: the verdicts of
    BATCHNORM_VERDICTS on target test (results.paired_test), and the choice of target
    statistics at evaluation on target val for STATISTICS_STAGE."""
    metrics = {name: [run(name, {}, s).metrics for s in SEEDS]
               for name in {n for _, a, b in BATCHNORM_VERDICTS for n in (a, b)}
               | {STATISTICS_STAGE}}

    def mious(name, key="target_test", scored=None):
        return [(m[scored] if scored else m)[key]["miou"] for m in metrics[name]]

    verdicts = [{"what": what, "stage": a, "control": b, "split": "target_test",
                 "stage_miou": mious(a), "control_miou": mious(b),
                 **paired_test(mious(a), mious(b))} for what, a, b in BATCHNORM_VERDICTS]
    target = mious(STATISTICS_STAGE, "target_val", TARGET_STATISTICS)
    trained = mious(STATISTICS_STAGE, "target_val")
    test = paired_test(target, trained)
    return {"seeds": list(SEEDS), "verdicts": verdicts,
            "statistics_choice": {"stage": STATISTICS_STAGE, "split": "target_val",
                                  "target_statistics_miou": target, "as_trained_miou": trained,
                                  **test, "chosen": test["verdict"] == "helps",
                                  "target_test_target_statistics": mious(
                                      STATISTICS_STAGE, scored=TARGET_STATISTICS),
                                  "target_test_as_trained": mious(STATISTICS_STAGE)}}


def _term(term: Term, run, bench, device) -> dict:
    """One term's row: the term off, the grid, the rule's choice and, for a strength chosen,
    its confirmation over SEEDS on target val and its verdict on target test, both against
    the term off. `run(stage, changes, seed=SEED)` loads or trains a run."""
    off = summary(run(term.off, {}), bench, device)
    points = [{"strength": s, **summary(run(term.stage, {term.field: s}), bench, device,
                                          term.accuracy)} for s in GRID]
    chosen = choose_strength(off, points)
    row = {"name": term.name, "field": term.field, "stage": term.stage, "off": term.off,
           "paper": term.paper, "off_scores": off, "points": points, "chosen": chosen}
    if chosen:
        on = [run(term.stage, {term.field: chosen}, s).metrics for s in SEEDS]
        control = [run(term.off, {}, s).metrics for s in SEEDS]
        for key, split in (("confirmation", "target_val"), ("verdict", "target_test")):
            a, b = ([m[split]["miou"] for m in ms] for ms in (on, control))
            row[key] = {"seeds": list(SEEDS), "split": split, "chosen_miou": a, "off_miou": b,
                        **paired_test(a, b)}
    return row


def run_mechanisms(preset_name: str = "default", run_dir: Path = Path("runs"),
                   out: Path = Path("figures"), device="cpu", progress: bool = True,
                   log=print) -> dict:
    """Train (or re-read) every run of the module docstring and write out/mechanisms.json
    and its figure. Returns the record."""
    cfg = preset(preset_name)
    bench = load(cfg.data, Path(run_dir) / "data", verbose=progress)
    models = Path(run_dir) / "models"

    def run(stage, changes, seed=SEED):
        changed = override(cfg, **changes)
        stage_config(stage, changed)     # refuse a bad point before anything trains
        log(f"mechanisms: {stage} {changes or ''} seed {seed}")
        return run_stage(stage, changed, bench, seed, device, models, progress,
                         with_target_statistics=True)

    record = {**run_metadata(preset_name, device), "seed": SEED, "chosen_on": "target_val",
              "min_gain": MIN_GAIN}
    record["references"] = {name: summary(run(name, {}), bench, device)
                            for name in ("source_only", "adabn")}
    record["batchnorm"] = _batchnorm(run)
    record["terms"] = [_term(term, run, bench, device) for term in TERMS]
    candidates = []
    for name, changes in ST_CANDIDATES:
        result = run("uda_self_training", {**ST_FIELDS, **changes})
        candidates.append({"name": name, "overrides": {**ST_FIELDS, **changes},
                           "pseudo_labels": result.metrics.get("pseudo_labels"),
                           **summary(result, bench, device)})
    wda = run("wda_image", {})
    human = stage_config("wda_self_training", override(cfg, **WDA_FILTER)).adapt
    with tempfile.TemporaryDirectory() as folder:  # PNGs one at a time, not held in memory
        quality = write_pseudo_labels(wda.model, bench["target_train"], human, device, folder,
                                      cfg.train.eval_batch_size)["quality"]
    record["self_training_wda"] = {"start": summary(wda, bench, device),
                                   "overrides": WDA_FILTER, "pseudo_labels": quality}
    record["self_training"] = {"start": summary(run("uda_pixel", {}), bench, device),
                               "continued": summary(run("uda_pixel_continued", {}), bench,
                                                    device),
                               "without_labels": summary(run("uda_self_training_no_labels",
                                                             {}), bench, device),
                               "candidates": candidates,
                               "chosen": max(candidates,
                                             key=lambda c: c["target_val_miou"])["name"]}
    chosen = next(c for c in candidates if c["name"] == record["self_training"]["chosen"])
    record["self_training"]["control_is_the_chosen_round"] = all(
        chosen["overrides"][k] == v for k, v in CHOSEN_SELF_TRAINING.items())
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "mechanisms.json", record)
    atomic_write(out / "mechanisms.md", lambda f: f.write(render_markdown(record).encode()))
    plots.save_figure(plots.strength_response(record), "mechanisms_strengths", out)
    return record


def _strength(s: float) -> str:
    return "off" if not s else f"{s:g}"


def _interval(t: dict) -> str:
    return "—" if t["ci_low"] is None else f"[{t['ci_low']:+.2f}, {t['ci_high']:+.2f}]"


def _batchnorm_markdown(bn: dict) -> list[str]:
    """The BatchNorm verdicts and the statistics choice as Markdown lines."""
    lines = [f"## What BatchNorm statistics alone account for (seeds {bn['seeds']})", "",
             "Target test, mean over the seeds; the series' rule: a paired t-test, 95% "
             "interval of the mean paired gain.", "",
             "| step | stage mIoU | control mIoU | mean gain | interval | p | verdict |",
             "|---|---|---|---|---|---|---|"]
    for v in bn["verdicts"]:
        lines.append(f"| {v['what']} | {np.mean(v['stage_miou']):.1f} | "
                     f"{np.mean(v['control_miou']):.1f} | {v['gain']:+.2f} | {_interval(v)} | "
                     f"{v['p']:.3f} | {v['verdict']} |")
    c = bn["statistics_choice"]
    lines += ["", f"Target statistics at evaluation for the full UDA recipe, decided on target "
              f"val: {np.mean(c['target_statistics_miou']):.1f} against "
              f"{np.mean(c['as_trained_miou']):.1f} as trained (paired gain {c['gain']:+.2f}, "
              f"95% interval {_interval(c)}, p = {c['p']:.3f}): "
              f"{'chosen' if c['chosen'] else 'not chosen'}. On target test, written down and "
              f"not compared: {np.mean(c['target_test_target_statistics']):.1f} against "
              f"{np.mean(c['target_test_as_trained']):.1f}.", ""]
    return lines


def _self_training_markdown(record: dict) -> list[str]:
    """The self-training candidates' table and the weak-label filter's measurements."""
    lines = []
    st = record["self_training"]
    lines += ["## Self-training candidates (this project's extension)", "",
              f"Target val mIoU: the starting point (UDA full recipe) "
              f"{st['start']['target_val_miou']:.1f}; the same continued as long without "
              f"self-training {st['continued']['target_val_miou']:.1f}; the round of "
              f"stages.CHOSEN_SELF_TRAINING with its pseudo labels weighted 0 (its augmentation "
              f"and steps alone) {st['without_labels']['target_val_miou']:.1f}"
              + ("" if st.get("control_is_the_chosen_round", True) else
                 " — NOT the round chosen below: update stages.CHOSEN_SELF_TRAINING") + ".", "",
              "| candidate | target val mIoU | with target BN statistics | pseudo-label "
              "precision (%) | coverage (%) |", "|---|---|---|---|---|"]
    for c in st["candidates"]:
        q = (c.get("pseudo_labels") or {}).get("filtered", {})
        lines.append(f"| {c['name']} | {c['target_val_miou']:.1f} | "
                     f"{c['target_val_miou_target_statistics']:.1f} | "
                     f"{q.get('precision', float('nan')):.1f} | "
                     f"{q.get('coverage', float('nan')):.1f} |")
    lines += ["", f"Chosen by the rule: {st['chosen']}.", "",
              "The weak-label filter, where it acts: precision and coverage (%) of the pixel "
              "pseudo labels on target train with confidence alone -> with the filter. UDA: "
              "the chosen candidate's labels, filtered by its "
              "pseudo-weak labels; WDA: the WDA full recipe's labels (class-balanced, no cap), "
              "filtered by a person's image labels (measured, not trained on).", ""]
    chosen = next(c for c in st["candidates"] if c["name"] == st["chosen"])
    for name, q in (("UDA, pseudo-weak labels", chosen.get("pseudo_labels") or {}),
                    ("WDA, image labels", record["self_training_wda"]["pseudo_labels"])):
        a, b = q.get("confidence_only", {}), q.get("filtered", {})
        lines.append(f"- {name}: precision {a.get('precision', 0):.1f} -> "
                     f"{b.get('precision', 0):.1f}, coverage {a.get('coverage', 0):.1f} -> "
                     f"{b.get('coverage', 0):.1f}.")
    return lines


def render_markdown(record: dict) -> str:
    """The record as Markdown tables; figures/mechanisms.md is exactly this of
    mechanisms.json."""
    refs = record["references"]
    lines = [f"# Each mechanism against its control: {record['preset']} preset, seed "
             f"{record['seed']}, chosen on target val", "",
             f"Source-only {refs['source_only']['target_val_miou']:.1f}, with target "
             f"BatchNorm statistics (AdaBN, nothing trained) "
             f"{refs['adabn']['target_val_miou']:.1f} mIoU on target val.", ""]
    lines += _batchnorm_markdown(record["batchnorm"])
    for t in record["terms"]:
        lines += [f"## {t['name']} ({t['field']}; the paper: {t['paper']:g})", "",
                  "| strength | target val mIoU | with target BN statistics | discriminator "
                  "accuracy (%) | domain separation | target test mIoU (not compared) |",
                  "|---|---|---|---|---|---|"]
        for p in [{"strength": 0.0, **t["off_scores"]}, *t["points"]]:
            acc = p.get("disc_accuracy")
            lines.append(f"| {_strength(p['strength'])} | {p['target_val_miou']:.1f} | "
                         f"{p['target_val_miou_target_statistics']:.1f} | "
                         f"{'—' if acc is None else f'{acc:.0f}'} | {p['separation']:.2f} | "
                         f"{p['target_test_miou']:.1f} |")
        lines += ["", f"Chosen by the rule: {_strength(t['chosen'])}."]
        for key, what in (("confirmation", "confirmed on target val (reported, not a "
                                            "verdict)"), ("verdict", "judged on target test")):
            c = t.get(key)
            if c:
                interval = ("" if c["ci_low"] is None else
                            f", 95% interval {c['ci_low']:+.2f} to {c['ci_high']:+.2f}")
                lines.append(f"Over seeds {c['seeds']}, {what}: {np.mean(c['chosen_miou']):.1f}"
                             f" against {np.mean(c['off_miou']):.1f} with the term off (paired "
                             f"gain {c['gain']:+.2f}{interval}, p = {c['p']:.3f}"
                             + (f"; {c['verdict']})." if key == "verdict" else ")."))
        lines.append("")
    lines += _self_training_markdown(record)
    lines += ["", f"Measured {record['date']} on {record['machine']} (commit {record['commit']}).",
              ""]
    return "\n".join(lines)


def main(preset_name: str = "default", run_dir: Path = Path("runs"),
         out: Path = Path("figures"), device: str = "auto") -> int:
    """`wsda mechanisms`: run the record and print what the rules chose."""
    record = run_mechanisms(preset_name, run_dir, out, resolve_device(device))
    for t in record["terms"]:
        print(f"mechanisms: {t['name']}: {_strength(t['chosen'])}")
    print(f"mechanisms: self-training: {record['self_training']['chosen']}; written to "
          f"{out / 'mechanisms.json'}")
    return 0
