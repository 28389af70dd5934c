"""The controls behind the series' claims (`wsda ablation`, `make ablation`).

A step's gain has an obvious other explanation that its own comparison cannot rule out. Each
control is a stage trained like the step in every way but the one that matters, and the
step is judged against it by the series' one rule (results.paired_test: a paired t-test
over the seeds on target test):

* self-training trains 1000 steps more than the stage it starts from: against the same
  stage continued for 1000 steps without it (uda_pixel_continued);
* L_c with pseudo-weak labels may help without any image-specific label: against L_c with
  every class labelled present (uda_weak_all_present);
* the default's pseudo-weak labels depart from the paper's: against the paper's recipe
  (uda_paper_labels), the choice of docs/method.md §13 confirmed over seeds;
* category-wise alignment is fed wrong labels in UDA: with human image labels (WDA), with
  and without it, neither with pixel adaptation (wda_category against wda_weak);
* FDA restyles towards the target: against a random colour jitter of the same strength
  (uda_colour), which moves the source as far, towards nothing.

The stages are cached as runs beside the series' (same RUN_DIR), so the stages the series
trained are read, not trained again. Writes OUT/ablation.json and OUT/ablation.md.
"""

from __future__ import annotations

from pathlib import Path

from .atomic import write_json
from .config import preset
from .data import load
from .engine import resolve_device
from .results import LEVEL, TEST, mean_std, paired_test, run_metadata
from .stages import run_stage, stage

# (what, stage, the control it is judged against)
CONTROLS = (
    ("Self-training, against 1000 more steps without it", "uda_self_training",
     "uda_pixel_continued"),
    ("Pseudo-weak labels, against every class labelled present", "uda_weak",
     "uda_weak_all_present"),
    ("The default's pseudo-weak labels, against the paper's", "uda_weak", "uda_paper_labels"),
    ("Category-wise alignment, with WDA image labels", "wda_category", "wda_weak"),
    ("FDA restyling, against random colour augmentation of the same strength", "uda_pixel",
     "uda_colour"),
)


def run_ablation(preset_name: str = "default", seeds=(0, 1, 2), run_dir: Path = Path("runs"),
                 out: Path = Path("figures"), device="cpu", progress: bool = True,
                 log=print) -> dict:
    """Train (or read) both stages of every CONTROLS row for `seeds` and write
    out/ablation.json and out/ablation.md. Returns the record: per row the per-seed target
    val and test mIoU of both stages and the rule's test on target test."""
    cfg = preset(preset_name)
    bench = load(cfg.data, Path(run_dir) / "data", verbose=progress)
    scores: dict[str, dict] = {}
    for _, a, b in CONTROLS:
        for name in (a, b):
            if name in scores:
                continue
            log(f"ablation: {name}, seeds {list(seeds)}")
            metrics = [run_stage(name, cfg, bench, s, device, Path(run_dir) / "models",
                                 progress).metrics for s in seeds]
            scores[name] = {split: [m[split]["miou"] for m in metrics]
                            for split in ("target_val", "target_test")}
    rows = [{"what": what, "stage": a, "control": b, "split": "target_test",
             "stage_title": stage(a).title, "control_title": stage(b).title,
             "stage_miou": scores[a], "control_miou": scores[b],
             **paired_test(scores[a]["target_test"], scores[b]["target_test"])}
            for what, a, b in CONTROLS]
    record = {**run_metadata(preset_name, device), "seeds": list(seeds), "test": TEST,
              "level": LEVEL, "controls": rows}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "ablation.json", record)
    (out / "ablation.md").write_text(render_markdown(record))
    return record


def render_markdown(record: dict) -> str:
    """The controls as a Markdown table; figures/ablation.md is exactly this of ablation.json."""
    lines = [f"# Controls: {record['preset']} preset, seeds {record['seeds']}", "",
             f"mIoU (%) on target test, mean ± std over seeds; verdict: {record['test']}, "
             f"{100 * record['level']:.0f}% confidence interval of the mean paired gain.", "",
             "| claim | stage | control | stage mIoU | control mIoU | mean gain | interval | p "
             "| verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for r in record["controls"]:
        (ma, sa), (mb, sb) = (mean_std(r["stage_miou"]["target_test"]),
                              mean_std(r["control_miou"]["target_test"]))
        interval = "—" if r["ci_low"] is None else f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
        p = "—" if r["p"] is None else f"{r['p']:.3f}"
        lines.append(f"| {r['what']} | {r['stage_title']} | {r['control_title']} | "
                     f"{ma:.1f} ± {sa:.1f} | {mb:.1f} ± {sb:.1f} | {r['gain']:+.2f} | "
                     f"{interval} | {p} | {r['verdict']} |")
    lines += ["", f"Measured {record['date']} on {record['machine']} "
              f"(commit {record['commit']}).", ""]
    return "\n".join(lines)


def main(preset_name: str, seeds: int, run_dir: Path, out: Path, device: str = "auto") -> int:
    """`wsda ablation`: the controls for seeds 0..seeds-1; prints each verdict."""
    record = run_ablation(preset_name, tuple(range(seeds)), run_dir, out,
                          resolve_device(device))
    for r in record["controls"]:
        print(f"ablation: {r['what']}: {r['verdict']} ({r['gain']:+.2f})")
    print(f"ablation: written to {out / 'ablation.json'}")
    return 0
