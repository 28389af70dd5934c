"""`make bench`'s arithmetic on known inputs, and its step measurement on the smoke data
(no timing is asserted: speed targets live in bench/results.json, not in tests)."""

import json

import pytest

from wsda_lib.experiments import bench


def _result(series_seconds=1000.0, ratio=1.2, rss=1.5):
    nb = {f"0{i}_x.ipynb": 10.0 for i in range(6)}
    return {"machine": {"cpu": "cpu", "cores": 2, "torch": "t", "torch_threads": 2},
            "date": "2026-11-29",
            "series": {"smoke_3_seeds": {"notebooks_seconds": nb, "series_seconds": 59.0},
                       "default_1_seed": {"notebooks_seconds": {**nb, "06_x.ipynb": 400.0,
                                                                "A_x.ipynb": 10.0},
                                          "series_seconds": 460.0},
                       "default_3_seeds": {"notebooks_seconds": nb,
                                           "series_seconds": series_seconds}},
            "steps": {"adaptation_overhead_ratio": ratio, "source_only_step_ms": 25,
                      "source_only_images_per_second": 320, "adaptation_step_ms": 70,
                      "adaptation_images_per_second": 228, "target_forward_backward_ms": 24,
                      "term_cost_ms": {"weak_label_loss": 1.0}},
            "peak_rss_gib": rss}


def test_targets_are_checked_against_the_measurements():
    targets = bench.check_targets(_result())
    assert targets["default_3_seeds_seconds"] == {"target": 900, "measured": 1000.0,
                                                  "met": False}
    # every notebook of the one-seed series but the results notebook (06): 00-05 and A
    assert targets["notebooks_00_04_one_seed_seconds"]["measured"] == 70.0
    assert targets["smoke_series_seconds"]["met"] is True
    assert targets["adaptation_overhead_ratio"]["met"] is False
    assert targets["peak_rss_gib"]["met"] is True
    result = {**_result(), "targets": targets}
    table = bench.markdown(result)
    assert "| default 3 seeds seconds | ≤ 900 | 1000.0 | no |" in table


def test_a_quick_measurement_says_so_and_shows_what_it_did_not_measure():
    result = _result()
    del result["series"]["default_3_seeds"], result["series"]["default_1_seed"]
    del result["peak_rss_gib"]
    result.update(mode="quick", commit="0123456789abcdef+changes")
    result["targets"] = bench.check_targets(result)
    table = bench.markdown(result)
    assert table.startswith(
        "Measured by `python -m wsda_lib.experiments.bench --quick` at commit 0123456 ")
    assert "| default 3 seeds seconds | ≤ 900 | — | — |" in table
    assert "None" not in table


def test_the_bench_records_the_commit_it_measured():
    """One function gives the commit to every record: the bench's full hash, results.json's
    and the readers' copies' short one, both of the checkout the package is imported from."""
    import subprocess
    from pathlib import Path

    from wsda_lib.core import provenance

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                          capture_output=True, text=True).stdout.strip()
    assert bench.commit is provenance.commit and bench.commit().split("+")[0] == head
    short = provenance.commit(short=True)
    assert 7 <= len(short) < len(head) and head.startswith(short)


def test_profile_sums_every_runs_phase_clock(tmp_path):
    for name, phases in (("a", {"forward": 10.0, "backward": 20.0}),
                         ("b", {"forward": 5.0, "evaluation": 1.0})):
        path = tmp_path / "models" / name / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"history": {"phase_seconds": phases}}))
    p = bench.profile(tmp_path, series_seconds=100.0, notebooks=6, startup=2.0)
    assert p["runs"] == 2
    assert p["seconds"]["forward"] == 15.0 and p["seconds"]["kernel_startup"] == 12.0
    assert p["seconds"]["plots_analysis_other"] == pytest.approx(100 - 15 - 20 - 1 - 12)
    assert sum(p["seconds"].values()) == pytest.approx(100.0)


@pytest.mark.slow
def test_step_costs_measure_every_field(smoke_bench):
    steps = bench.step_costs(smoke_bench, iterations=2)
    assert set(steps["term_cost_ms"]) == {"output_space_adversarial", "weak_label_loss",
                                          "category_alignment", "pixel_adaptation"}
    assert steps["adaptation_overhead_ratio"] > 0 and steps["source_only_images_per_second"] > 0


def test_the_trade_sums_times_and_judges_paired_seeds(monkeypatch, tmp_path):
    from types import SimpleNamespace

    import wsda_lib.stages

    monkeypatch.setattr(bench, "load", lambda *a, **k: None)

    def fake_run_stage(stage, cfg, benchmark, seed, device, root, progress):
        half = cfg.train.iterations < 3000
        bf16 = cfg.train.precision == "bf16" and cfg.train.channels_last
        val = {"adaptsegnet": 30.0, "uda_weak": 32.0}.get(stage, 40.0) + seed - 2 * half
        return SimpleNamespace(metrics={"history": {"seconds": 10.0 if half else
                                                    16.0 if bf16 else 20.0},
                                        "target_test": {"miou": val + 1},
                                        "target_val": {"miou": val}})

    monkeypatch.setattr(wsda_lib.stages, "run_stage", fake_run_stage)
    trade = bench.trade(tmp_path, seeds=(0, 1, 2))
    assert list(trade["variants"]) == ["default", "x0.5", "bf16_channels_last"]
    full, half = trade["variants"]["default"], trade["variants"]["x0.5"]
    fast = trade["variants"]["bf16_channels_last"]
    assert half["iterations"] == {"supervised": 1500, "adaptation": 500}
    assert fast["iterations"] == full["iterations"] == {"supervised": 3000, "adaptation": 1000}
    assert fast["overrides"] == {"train.precision": "bf16", "train.channels_last": True}
    assert full["training_seconds"] == 6 * 3 * 20.0 and half["training_seconds"] == 6 * 3 * 10.0
    assert fast["training_seconds"] == 6 * 3 * 16.0
    assert full["target_test_miou"]["uda_weak"] == [34.0, 1.0]   # 33, 34, 35
    assert half["target_test_miou"]["uda_weak"] == [32.0, 1.0]
    # a constant +2 over every seed: no spread, so the interval is the gain itself
    assert full["comparisons_target_val"]["uda_weak vs adaptsegnet"] == (
        "helps +2.00, 95% CI [+2.00, +2.00], p = 0.000, paired t-test over 3 seeds")


def test_more_seeds_reuses_the_one_seed_notebooks_and_reruns_06(monkeypatch, tmp_path):
    calls = []

    def fake_reproduce(preset, seed, seeds, out, figures, run_dir, device, notebooks):
        calls.append((preset, seeds, run_dir, [p.name for p in notebooks]))
        return {"06_results.ipynb": 300.04}

    monkeypatch.setattr(bench, "reproduce", fake_reproduce)
    one = {"notebooks_seconds": {"00_a.ipynb": 10.0, "04_b.ipynb": 100.0,
                                 "06_results.ipynb": 5.0},
           "series_seconds": 117.0, "run_dir": str(tmp_path / "runs")}  # 2 s between them
    three = bench.more_seeds(one, "default", 3)
    assert calls == [("default", 3, tmp_path / "runs", ["06_results.ipynb"])]
    assert three["notebooks_seconds"] == {"00_a.ipynb": 10.0, "04_b.ipynb": 100.0,
                                          "06_results.ipynb": 300.0}
    assert three["series_seconds"] == 10 + 100 + 300.0 + 2


def test_the_readmes_performance_numbers_are_bench_results():
    """The README quotes bench/results.md whole, and bench/results.md is what results.json
    renders to; the series times in 'How long' are results.json's."""
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    result = json.loads((repo / "bench/results.json").read_text())
    table = (repo / "bench/results.md").read_text()
    assert bench.markdown(result) == table
    readme = (repo / "README.md").read_text()
    assert table in readme
    for key in ("smoke_3_seeds", "default_3_seeds", "default_1_seed"):
        assert f"{result['series'][key]['series_seconds']:.0f} s" in readme
    assert f"{result['targets']['notebooks_00_04_one_seed_seconds']['measured']:.0f} s" in readme


def test_the_readmes_schedule_trade_is_trade_json():
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    trade = json.loads((repo / "bench/trade.json").read_text())
    readme = (repo / "README.md").read_text()
    for schedule in trade["variants"].values():
        assert f"| {schedule['training_seconds']:.0f} s |" in readme
        for mean, std in schedule["target_test_miou"].values():
            assert f"{mean:.1f} ± {std:.1f}" in readme
        # written by the rule of its day: "verdicts_target_val" before the paired t-test
        key = "comparisons_target_val" if "comparisons_target_val" in schedule else \
            "verdicts_target_val"
        for verdict in schedule[key].values():
            assert verdict in readme
