"""`make bench`: how fast the series runs on this machine, written to bench/results.json and
bench/results.md (the README's performance table), all measured in one run.

* series: the wall time of each notebook and of the whole series (`reproduce`), in the smoke
  preset (3 seeds, as `make smoke`) and in the default preset with 1 and with 3 seeds. Each
  starts with no trained run; the generated benchmark (the data cache) is reused, warm. The
  3-seed default series reuses the 1-seed one's notebooks 00-05, which train seed 0 alone
  (`more_seeds`), and runs 06 again with 3 seeds.
* steps: training throughput (images/s) of a source-only step and of an adaptation step with
  every term of the UDA recipe on (L_seg, L_adv, L_c, L_adv^C, FDA restyling), at the default
  size; the adaptation overhead ratio, adaptation step / (source-only step + one more forward
  and backward pass on the target batch); the cost of each term (the full step minus the
  step without it); and both steps again in bf16 and channels-last (FAST_NUMERICS).
* peak resident memory: the largest of the notebook kernels' and this process's peak RSS.
* profile: where the default 3-seed series spends its time, from the phase clocks every run
  records (training.loop.PhaseClock: data, forward, backward, discriminators, evaluation,
  checkpoint; stages: labels, final scores), the kernels' start-up (one empty notebook timed,
  times the notebooks run) and the rest of the notebooks' time (plots, analysis, loading).

Speed targets live here (TARGETS), not in timed tests: a slow CI machine should not fail the
suite. `python -m wsda_lib.experiments.bench --quick` measures only the smoke series and the steps.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import torch

from wsda_lib.core.atomic import strict, write_json
from wsda_lib.core.config import override, preset
from wsda_lib.core.provenance import commit, machine, peak_rss_gib
from wsda_lib.data import load
from wsda_lib.experiments.reproduce import reproduce, run_notebook
from wsda_lib.experiments.reproduce import series as notebook_series
from wsda_lib.method.objective import segmentation_loss
from wsda_lib.stages import build_model, stage_config
from wsda_lib.training.engine import train_adaptation, train_supervised

# The project's goals (issue: "the whole series in a quarter of an hour on two cores").
TARGETS = {
    "default_3_seeds_seconds": 15 * 60,
    "notebooks_00_04_one_seed_seconds": 8 * 60,
    "smoke_series_seconds": 60,
    "adaptation_overhead_ratio": 1.1,
    "peak_rss_gib": 2.0,
}
SERIES = (("smoke", 3), ("default", 1), ("default", 3))  # default 3: more_seeds of default 1
# The results notebook: the only one that reads SEEDS. The target named "notebooks_00_04_..."
# (named before the series was renumbered) times every other notebook of the one-seed series.
RESULTS_NOTEBOOK = "06_"
FAST_NUMERICS = {"train.precision": "bf16", "train.channels_last": True}
PHASES = ("data", "forward", "backward", "discriminators", "evaluation", "final_scores",
          "labels", "checkpoint")


def series_time(preset_name: str, seeds: int, work: Path, warm_data: Path) -> dict:
    """Run the whole series into `work` (no trained run; the benchmark copied from
    `warm_data`); returns each notebook's seconds, the total and the run folder."""
    run_dir = work / f"{preset_name}-{seeds}" / "runs"
    shutil.copytree(warm_data, run_dir / "data",
                    ignore=shutil.ignore_patterns("pseudo_labels", ".*.tmp"))
    start = time.perf_counter()
    notebooks = reproduce(preset_name, 0, seeds, out=run_dir.parent / "build",
                          figures=run_dir.parent / "figures", run_dir=run_dir, device="cpu")
    return {"notebooks_seconds": {k: round(v, 1) for k, v in notebooks.items()},
            "series_seconds": round(time.perf_counter() - start, 1),
            "run_dir": str(run_dir)}


def more_seeds(one_seed: dict, preset_name: str, seeds: int) -> dict:
    """The series with `seeds` seeds from the one-seed series `one_seed` (series_time's
    result): notebooks 00-05 train seed 0 alone and do not read SEEDS, so theirs are the same
    runs; notebook 06, which trains the other seeds, is run again with `seeds` seeds into the
    same run folder. The series' seconds are the notebooks' plus the one-seed series' time
    between them. Saves running 00-05 twice (a quarter of an hour at the default)."""
    run_dir = Path(one_seed["run_dir"])
    last = [p for p in notebook_series() if p.name.startswith(RESULTS_NOTEBOOK)]
    timings = reproduce(preset_name, 0, seeds, out=run_dir.parent / f"build-{seeds}",
                        figures=run_dir.parent / f"figures-{seeds}", run_dir=run_dir,
                        device="cpu", notebooks=last)
    notebooks = {**one_seed["notebooks_seconds"], **{k: round(v, 1) for k, v in timings.items()}}
    between = one_seed["series_seconds"] - sum(one_seed["notebooks_seconds"].values())
    return {"notebooks_seconds": notebooks,
            "series_seconds": round(sum(notebooks.values()) + between, 1),
            "run_dir": str(run_dir),
            "measured_as": f"notebooks 00-05 of the 1-seed series; 06 run with {seeds} seeds "
                           f"after it, into the same runs"}


def kernel_startup(work: Path) -> float:
    """Seconds papermill takes to run a notebook whose one cell imports what every notebook
    of the series imports first: the start-up each notebook pays."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("PRESET = 'smoke'", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("import wsda_lib.teaching.session  # noqa")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = work / "startup.ipynb"
    nbformat.write(nb, path)
    run_notebook(path, work / "startup-out.ipynb", {"PRESET": "smoke"})  # the first one warms
    return round(run_notebook(path, work / "startup-out.ipynb", {"PRESET": "smoke"}), 2)


def profile(run_dir: Path, series_seconds: float, notebooks: int, startup: float) -> dict:
    """Seconds of the series per phase: the phase clocks of every run trained in `run_dir`
    (one per stage and seed), the kernels' start-up, and the rest (plots, analysis, loading
    cached runs, what the notebooks compute themselves)."""
    seconds = dict.fromkeys(PHASES, 0.0)
    runs = 0
    for path in sorted(Path(run_dir).glob("models/*/metrics.json")):
        phases = json.loads(path.read_text(encoding="utf-8"))["history"].get("phase_seconds", {})
        for k, v in phases.items():
            seconds[k] = seconds.get(k, 0.0) + v
        runs += 1
    seconds["kernel_startup"] = startup * notebooks
    seconds["plots_analysis_other"] = series_seconds - sum(seconds.values())
    return {"runs": runs, "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "share": {k: round(v / series_seconds, 3) for k, v in seconds.items()}}


def _ms(fn, iterations: int) -> float:
    start = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - start) / iterations


def step_costs(bench, iterations: int = 60) -> dict:
    """Milliseconds per training step at the default size, without evaluation or
    checkpoints: source-only; the full UDA step (uda_pixel's terms); one forward and backward
    pass on a target batch; the overhead ratio; and each adaptation term's cost, the full
    step minus the step without it."""
    cfg = override(preset("default"), **{"train.iterations": iterations,
                                         "adapt.iterations": iterations,
                                         "train.eval_every": 10**6,
                                         "train.checkpoint_every": None})
    val = bench["target_val"]
    tiny = type(val)("bench_val", val.images[:1], val.labels[:1], val.class_set,
                     val.typical_area) if hasattr(val, "images") else val
    model = build_model(cfg, bench.class_set)
    short = override(cfg, **{"train.iterations": 5, "adapt.iterations": 5})
    train_supervised(model, bench["source_train"], tiny, short.train, 0, "cpu", progress=False)
    source_ms = _ms(lambda: train_supervised(model, bench["source_train"], tiny, cfg.train, 0,
                                             "cpu", progress=False), iterations)
    images = torch.stack([bench["target_train"][i]["image"] for i in range(8)])
    labels = torch.zeros(8, *images.shape[-2:], dtype=torch.long)

    def forward_backward():
        for _ in range(iterations):
            segmentation_loss(model(images)[0], labels).backward()

    target_ms = _ms(forward_backward, iterations)
    model.zero_grad(set_to_none=True)

    def adapt(switches: dict) -> float:
        c = override(stage_config("uda_pixel", cfg), **switches)
        return _ms(lambda: train_adaptation(model, bench["source_train"], bench["target_train"],
                                            tiny, c, 0, "cpu", progress=False), iterations)

    adapt({"adapt.iterations": 5})  # warm-up
    full = adapt({})
    # the same two steps in bf16 and channels-last (train.precision, train.channels_last)
    fast = override(cfg, **FAST_NUMERICS)
    for _ in range(2):  # the first pass warms up the bf16 kernels
        fast_ms = {"source_only_step_ms": round(_ms(lambda: train_supervised(
            model, bench["source_train"], tiny, fast.train, 0, "cpu", progress=False),
            iterations), 1), "adaptation_step_ms": round(adapt(FAST_NUMERICS), 1)}
    # each term's cost: the full step minus the step without it (what switching it off saves)
    without = {"output_space_adversarial": "adapt.output_alignment",
               "weak_label_loss": "adapt.weak_loss",
               "category_alignment": "adapt.category_alignment",
               "pixel_adaptation": "adapt.pixel_adaptation"}
    term_cost = {name: round(full - adapt({field: False}), 1) for name, field in without.items()}
    batch = cfg.train.batch_size
    return {"source_only_step_ms": round(source_ms, 1),
            "target_forward_backward_ms": round(target_ms, 1),
            "adaptation_step_ms": round(full, 1),
            "term_cost_ms": term_cost,
            "source_only_images_per_second": round(1000 * batch / source_ms, 1),
            "adaptation_images_per_second": round(1000 * 2 * batch / full, 1),
            "adaptation_overhead_ratio": round(full / (source_ms + target_ms), 3),
            "bf16_channels_last": fast_ms}


# The trades measured when the targets cannot be met at the default: the same stages and
# seeds trained with the default config and with each variant's overrides. "x0.5" is half
# of every iteration count; "bf16_channels_last" keeps the schedule and changes the
# numerics of the training steps (train.precision, train.channels_last).
TRADE_VERDICTS = (("uda_weak", "adaptsegnet"), ("uda_pixel", "uda_weak"),
                  ("wda_image", "uda_pixel"))
TRADE_FRACTION = 0.5


def trade_variants(fraction: float = TRADE_FRACTION) -> dict:
    """Variant name -> overrides of the default preset, "default" first."""
    base = preset("default")
    return {"default": {},
            f"x{fraction}": {"train.iterations": round(base.train.iterations * fraction),
                             "adapt.iterations": round(base.adapt.iterations * fraction),
                             "train.eval_every": round(base.train.eval_every * fraction)},
            "bf16_channels_last": FAST_NUMERICS}


def trade(run_dir: Path, seeds=(0, 1, 2), variants: dict | None = None) -> dict:
    """Time against mIoU: the stages marked `trade` (stages.registry.trade_stages) for `seeds` with
    the default config and each variant of `variants` (default: trade_variants()), loaded from or
    trained into `run_dir`. For each: its overrides, iterations, the training seconds the runs
    recorded (their loops' clocks, evaluation along the way included; a run loaded from the cache
    keeps the seconds of the code that trained it), target test mIoU mean ± std per stage, and the
    comparisons of TRADE_VERDICTS on target val, where a schedule is chosen (the rule of
    results.paired_test, on target val), with the per-seed target val mIoU behind them."""
    from wsda_lib.records.results import judge, mean_std
    from wsda_lib.stages import run_stage
    from wsda_lib.stages.registry import trade_stages

    base = preset("default")
    bench = load(base.data, Path(run_dir) / "data", verbose=False)
    out = {}
    for name, overrides in (variants or trade_variants()).items():
        cfg = override(base, **overrides)
        seconds, test, val = 0.0, {}, {}
        for stage in trade_stages():
            for seed in seeds:
                m = run_stage(stage, cfg, bench, seed, "cpu", Path(run_dir) / "models",
                              progress=False).metrics
                seconds += m["history"]["seconds"]
                test.setdefault(stage, []).append(m["target_test"]["miou"])
                val.setdefault(stage, []).append(m["target_val"]["miou"])
        out[name] = {
            "overrides": overrides,
            "iterations": {"supervised": cfg.train.iterations, "adaptation": cfg.adapt.iterations},
            "training_seconds": round(seconds, 1),
            "target_test_miou": {k: [round(x, 1) for x in mean_std(v)] for k, v in test.items()},
            "target_val_miou_per_seed": {k: [round(x, 2) for x in v] for k, v in val.items()},
            "comparisons_target_val": {f"{a} vs {b}": " ".join(judge(val[a], val[b]))
                                       for a, b in TRADE_VERDICTS}}
    return {"seeds": list(seeds), "stages": list(trade_stages()), "variants": out}


def check_targets(result: dict) -> dict:
    """Each target of TARGETS with the measured value and whether it is met (None: not
    measured in this run)."""
    series = result.get("series", {})
    default3 = series.get("default_3_seeds", {})
    default1 = series.get("default_1_seed", {})
    measured = {
        "default_3_seeds_seconds": default3.get("series_seconds"),
        "notebooks_00_04_one_seed_seconds": sum(
            v for k, v in default1["notebooks_seconds"].items()
            if not k.startswith(RESULTS_NOTEBOOK))
        if default1 else None,
        "smoke_series_seconds": series.get("smoke_3_seeds", {}).get("series_seconds"),
        "adaptation_overhead_ratio": result["steps"]["adaptation_overhead_ratio"],
        "peak_rss_gib": result.get("peak_rss_gib") if default3 else None,
    }
    return {k: {"target": TARGETS[k], "measured": None if v is None else round(v, 3),
                "met": None if v is None else v <= TARGETS[k]} for k, v in measured.items()}


def markdown(result: dict) -> str:
    """The README's performance table."""
    m = result["machine"]
    order = [f"{name}_{seeds}_seed{'s' if seeds > 1 else ''}" for name, seeds in SERIES]
    series = {k: result["series"][k] for k in order if k in result["series"]}
    command = "`python -m wsda_lib.experiments.bench --quick`" if result.get("mode") == "quick" \
        else "`make bench`"
    at = f" at commit {result['commit'][:7]}" if result.get("commit") else ""
    lines = [f"Measured by {command}{at} on {m['cpu']} ({m['cores']} cores, torch "
             f"{m['torch']}, {m['torch_threads']} threads), {result['date']}.", "",
             "| notebook | " + " | ".join(k.replace("_", " ") for k in series) + " |",
             "|---|" + "---|" * len(series)]
    names = sorted({n for s in series.values() for n in s["notebooks_seconds"]})
    for n in names:
        lines.append(f"| {n} | " + " | ".join(
            f"{s['notebooks_seconds'].get(n, float('nan')):.0f} s"
            for s in series.values()) + " |")
    lines.append("| **whole series** | " + " | ".join(
        f"**{s['series_seconds']:.0f} s**" for s in series.values()) + " |")
    st = result["steps"]
    lines += ["", f"Training at 64×128, batch 8: source-only {st['source_only_step_ms']} ms a "
              f"step ({st['source_only_images_per_second']} images/s); an adaptation step with "
              f"every UDA term {st['adaptation_step_ms']} ms "
              f"({st['adaptation_images_per_second']} images/s); overhead ratio "
              f"{st['adaptation_overhead_ratio']} (one forward and backward on a target batch: "
              f"{st['target_forward_backward_ms']} ms). Switching a term off saves: "
              + ", ".join(f"{k.replace('_', ' ')} {v} ms" for k, v in
                          sorted(st["term_cost_ms"].items(), key=lambda kv: -kv[1])) + "."]
    if "bf16_channels_last" in st:
        fast = st["bf16_channels_last"]
        lines.append(f"With `train.precision=bf16` and `train.channels_last=True`: source-only "
                     f"{fast['source_only_step_ms']} ms, adaptation {fast['adaptation_step_ms']} "
                     f"ms a step.")
    if "measured_as" in result["series"].get("default_3_seeds", {}):
        lines.append("The default 3-seed series: "
                     + result["series"]["default_3_seeds"]["measured_as"] + ".")
    if "peak_rss_gib" in result:
        lines.append(f"Peak resident memory: {result['peak_rss_gib']:.2f} GiB.")
    if "profile" in result:
        p = result["profile"]
        lines += ["", "Where the default 3-seed series spends its time: " + ", ".join(
            f"{k.replace('_', ' ')} {v:.0f} s ({100 * p['share'][k]:.0f} %)"
            for k, v in sorted(p["seconds"].items(), key=lambda kv: -kv[1])) + "."]
    lines += ["", "| target | goal | measured | met |", "|---|---|---|---|"]
    for k in TARGETS:
        t = result["targets"][k]
        measured = "—" if t["measured"] is None else t["measured"]
        lines.append(f"| {k.replace('_', ' ')} | ≤ {t['target']} | {measured} | "
                     f"{'yes' if t['met'] else 'no' if t['met'] is False else '—'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m wsda_lib.experiments.bench", description=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="the smoke series and the step costs only (a few minutes, not ~45)")
    p.add_argument("--out", type=Path, default=Path("bench"))
    p.add_argument("--trade", type=Path, metavar="RUN_DIR", default=None,
                   help="instead: measure the trades (`trade`: half the iterations, bf16 and "
                        "channels-last) with runs cached in RUN_DIR; writes OUT/trade.json")
    args = p.parse_args(argv)
    if args.trade is not None:
        measured = trade(args.trade)
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(args.out / "trade.json", measured)
        print(json.dumps(strict(measured), indent=2, allow_nan=False))
        return 0
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="wsda-bench-"))
    warm = work / "warm-data"
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "commit": commit(),
              "mode": "quick" if args.quick else "full", "series": {}}
    try:
        default_bench = load(preset("default").data, warm, verbose=False)
        load(preset("smoke").data, warm, verbose=False)
        result["steps"] = step_costs(default_bench)
        startup = kernel_startup(work)
        result["kernel_startup_seconds"] = startup
        for name, seeds in SERIES[:1] if args.quick else SERIES:
            key = f"{name}_{seeds}_seed{'s' if seeds > 1 else ''}"
            print(f"bench: the {name} series with {seeds} seed(s)", flush=True)
            one = result["series"].get(f"{name}_1_seed")
            result["series"][key] = more_seeds(one, name, seeds) if one \
                else series_time(name, seeds, work, warm)
        if not args.quick:
            result["peak_rss_gib"] = round(peak_rss_gib(), 3)
            s = result["series"]["default_3_seeds"]
            result["profile"] = profile(Path(s["run_dir"]), s["series_seconds"],
                                        len(s["notebooks_seconds"]), startup)
        for s in result["series"].values():
            del s["run_dir"]
        result["targets"] = check_targets(result)
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(args.out / "results.json", result)
        (args.out / "results.md").write_text(markdown(result), encoding="utf-8")
        print(markdown(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
