"""The committed results: figures/results.md is exactly what figures/results.json renders to,
and the JSON follows its schema."""

import json
import re
from pathlib import Path

import pytest
from fakes import stage_metrics

from wsda_lib.records.results import (
    detectable_gain,
    gap_closed,
    judge,
    mean_std,
    paired_power,
    paired_test,
    power_note,
    render_markdown,
    seeds_needed,
    tally,
    validate,
    verdict,
    verdict_records,
    verdicts,
)
from wsda_lib.stages import registry

FIGURES = Path(__file__).resolve().parent.parent / "figures"


def test_gap_closed_and_mean_std_by_hand():
    assert gap_closed(45.5, 36.6, 64.0) == pytest.approx(8.9 / 27.4)
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(2 ** 0.5))
    assert mean_std([5.0]) == (5.0, 0.0)


def test_verdict_says_plainly_when_a_stage_hurts_and_gives_none_for_one_seed():
    assert verdict("X", [29.0, 28.5, 28.0], "Y", [30.0, 30.0, 30.0],
                   split="target test").startswith("X: hurts — 28.5 mIoU against 30.0")
    assert verdict("X", [31.0, 32.0, 33.0], "Y", [30.0, 30.5, 31.0],
                   split="target test").startswith("X: helps")
    assert verdict("X", 15.63, "Y", 15.58, split="target val") == (
        "X: 15.6 mIoU against 15.6 for Y, on target val (+0.05 on one seed; no verdict from "
        "one seed).")
    with pytest.raises(TypeError):  # every caller names the split its numbers come from
        verdict("X", [1.0, 2.0], "Y", [1.0, 1.0])


def test_tally_counts_every_kind_including_one_seed():
    """Hand-made results where every stage has the same mIoU: over three seeds every gain is
    0 with no spread ("no clear difference"); cut to one seed, every comparison is counted
    as "one seed: no test", so the counts still sum to the number of comparisons."""
    steps = registry.comparisons()
    names = {n for _, a, b in steps for n in (a, b)}
    three = {"stages": [{"stage": n, "miou_per_seed": [30.0, 31.0, 32.0]} for n in names]}
    assert tally(three) == {"helps": 0, "no clear difference": len(steps), "hurts": 0,
                            "one seed: no test": 0}
    one = {"stages": [{"stage": n, "miou_per_seed": [30.0]} for n in names]}
    assert tally(one) == {"helps": 0, "no clear difference": 0, "hurts": 0,
                          "one seed: no test": len(steps)}


@pytest.mark.skipif(not (FIGURES / "results.json").exists(), reason="no committed results yet")
def test_committed_results_md_is_rendered_from_results_json():
    results = json.loads((FIGURES / "results.json").read_text())
    validate(results)
    assert (FIGURES / "results.md").read_text() == render_markdown(results)


@pytest.mark.skipif(not (FIGURES / "results.json").exists(), reason="no committed results yet")
def test_the_readme_reports_the_committed_results_and_their_verdicts():
    """Every number of the README's results table and every verdict it states is what the
    code computes from the committed figures/results.json."""
    results = json.loads((FIGURES / "results.json").read_text())
    readme = (FIGURES.parent / "README.md").read_text()
    table = [line for line in render_markdown(results).splitlines() if line.startswith("|")]
    assert all(line in readme for line in table)  # the verdicts' table among them
    assert power_note(results) in readme
    # every verdict the README states is the rule's on target test, scored both ways
    stated = re.findall(r"^\| ([^|]+) \| [^|]+ \| (as trained|target BN statistics) \| "
                        r"[^|]+ \| [^|]+ \| [^|]+ \| (helps|hurts|no clear difference) \|$",
                        readme, re.M)
    scored = {"as_trained": "as trained", "target_statistics": "target BN statistics"}
    rule = {(v["what"], scored[v["evaluation"]]): v["verdict"] for v in verdict_records(results)}
    assert {(w, s): k for w, s, k in stated} == rule and all(
        v["split"] == "target_test" for v in results["verdicts"])
    for evaluation, name in scored.items():
        assert [line.split(" — ")[0] for line in verdicts(results, evaluation)] == [
            f"{what}: {kind}" for (what, s), kind in rule.items() if s == name]


def test_paired_test_by_hand():
    # gains 1, 1.5, 2: mean 1.5, sd 0.5, standard error 0.5 / sqrt(3) = 0.2887, t = 5.196 on
    # 2 degrees of freedom; two-sided p = 1 - t / sqrt(2 + t^2) = 0.0351; the 95% interval is
    # 1.5 ± 4.303 * 0.2887 = [0.258, 2.742]
    t = paired_test([31.0, 32.0, 33.0], [30.0, 30.5, 31.0])
    assert t["verdict"] == "helps" and t["n"] == 3 and t["gain"] == pytest.approx(1.5)
    assert t["p"] == pytest.approx(1 - 5.196152 / (2 + 27) ** 0.5, abs=1e-5)
    assert (t["ci_low"], t["ci_high"]) == pytest.approx((0.2579, 2.7421), abs=1e-4)
    assert judge([31.0, 32.0, 33.0], [30.0, 30.5, 31.0]) == (
        "helps", "+1.50, 95% CI [+0.26, +2.74], p = 0.035, paired t-test over 3 seeds")
    # a mean gain whose interval holds 0 is no clear difference, however large the mean
    assert paired_test([33.0, 30.0, 36.0], [30.0, 30.0, 30.0])["verdict"] == "no clear difference"
    assert paired_test([29.0, 28.5, 28.0], [30.0, 30.0, 30.0])["verdict"] == "hurts"  # -1.5 ± 1.24
    # equal gains have no spread: the interval is the gain itself
    assert paired_test([30.3, 30.3], [30.0, 30.0])["ci_low"] == pytest.approx(0.3)
    assert paired_test([30.0], [29.0])["verdict"] == "one seed: no test"
    with pytest.raises(ValueError, match="one per seed"):
        judge([1.0, 2.0], [1.0])


def test_the_power_calculation_by_hand():
    # With sd 1 and 7 seeds a gain of 1.3 has noncentrality 1.3 * sqrt(7) = 3.44 against a
    # critical t of 2.447 on 6 degrees of freedom: power just over 0.8; 6 seeds fall short.
    assert paired_power(7, 1.0, 1.3) == pytest.approx(0.82, abs=0.01)
    assert paired_power(6, 1.0, 1.3) < 0.8
    # two seeds leave one degree of freedom (critical t 12.7): even a gain of 10 sd needs 3
    assert seeds_needed(1.0) == 7 and seeds_needed(1.0, gain=10.0) == 3
    assert paired_power(7, 1.0, detectable_gain(7, 1.0)) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="n=1"):
        detectable_gain(1, 1.0)
    one_seed = {"seeds": [0], "stages": [{"stage": s, "miou_per_seed": [30.0]}
                                         for _, a, b in registry.comparisons() for s in (a, b)]}
    assert "one seed has no spread" in power_note(one_seed)
    flat = {"seeds": [0, 1], "stages": [{"stage": s, "miou_per_seed": [30.0, 31.0]}
                                        for _, a, b in registry.comparisons() for s in (a, b)]}
    assert "did not vary" in power_note(flat)


def test_validate_names_what_is_wrong():
    good = {"preset": "smoke", "commit": "x", "date": "d", "machine": "m", "seeds": [0],
            "classes": ["a"], "stages": [], "verdicts": []}
    with pytest.raises(ValueError, match="stages"):
        validate(good)
    with pytest.raises(ValueError, match="missing key 'machine'"):
        validate({k: v for k, v in good.items() if k != "machine"})


def test_results_carry_the_pseudo_weak_labels_start_and_end_by_hand():
    from wsda_lib.records.results import summarise

    metrics = stage_metrics
    per_seed = {name: {0: metrics(30.0), 1: metrics(32.0)} for name in registry.result_stages()}
    per_seed["uda_weak"] = {0: metrics(30.0, ({"precision": 80.0, "recall": 90.0},
                                              {"precision": 70.0, "recall": 100.0})),
                            1: metrics(32.0, ({"precision": 84.0, "recall": 88.0},
                                              {"precision": 74.0, "recall": 98.0}))}
    per_seed["oracle"] = {0: metrics(70.0), 1: metrics(72.0)}
    out = summarise(per_seed, {n: n for n in registry.result_stages()}, ["a", "b"],
                    {"preset": "smoke", "commit": "x", "date": "d", "machine": "m"})
    by = {s["stage"]: s for s in out["stages"]}
    weak = by["uda_weak"]["pseudo_weak_labels"]
    assert weak["pseudo_weak_precision_start"] == {"per_seed": [80.0, 84.0], "mean": 82.0}
    assert weak["pseudo_weak_recall_end"] == {"per_seed": [100.0, 98.0], "mean": 99.0}
    assert "pseudo_weak_labels" not in by["adaptsegnet"]
    assert "| uda_weak | 82.0 -> 72.0 | 89.0 -> 99.0 |" in render_markdown(out)


def test_the_readme_names_the_commit_and_date_results_json_records():
    """The README's results say which `make reproduce` wrote them: results.json's commit and
    date, so that the table, the readers' copies and the prose name one run."""
    import json
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    results = json.loads((repo / "figures/results.json").read_text())
    readme = (repo / "README.md").read_text()
    assert (f"The default run: `make reproduce` at commit `{results['commit']}`, "
            f"{results['date'][:10]}") in readme


def test_power_per_step_by_hand():
    """Each step's row: the standard deviation of its paired per-seed gains, and the gain its
    seeds detect with 80% power; a step whose gains do not vary has no detectable gain."""
    from wsda_lib.records.results import detectable_gain, power_markdown

    stages = {name: [30.0, 30.0, 30.0] for _, a, b in registry.comparisons() for name in (a, b)}
    stages["adaptsegnet"] = [31.0, 31.5, 32.0]   # gains over AdaBN 1, 1.5, 2: sd 0.5
    results = {"seeds": [0, 1, 2],
               "stages": [{"stage": n, "miou_per_seed": v} for n, v in stages.items()]}
    rows = power_markdown(results)
    assert (f"| Output-space alignment, against AdaBN | 0.50 | {detectable_gain(3, 0.5):.1f} |"
            in rows)
    # L_c's gains over AdaptSegNet are -1, -1.5, -2: the same spread
    assert f"| L_c with pseudo-weak labels | 0.50 | {detectable_gain(3, 0.5):.1f} |" in rows
    assert "| Category-wise alignment | 0.00 | — |" in rows
    one = {**results, "seeds": [0],
           "stages": [{"stage": n, "miou_per_seed": v[:1]} for n, v in stages.items()]}
    assert "| Output-space alignment, against AdaBN | — | — |" in power_markdown(one)


def test_each_step_is_scored_both_ways_and_the_statistics_are_chosen_on_val_by_hand():
    """Three seeds where every stage scores 30, 31, 32 as trained, and the full UDA recipe
    gains 1, 1.5, 2 with target BatchNorm statistics on target val but loses 1, 1.5, 2 on
    target test: the choice reads val only — its paired test is the hand-worked one of
    test_paired_test_by_hand (helps: chosen) — and the verdicts test only, so pixel
    adaptation is judged twice, with no gain as trained and -1.5 (hurts) with target
    statistics. AdaBN against source-only is not judged with target statistics (the same
    weights, scored so)."""
    from wsda_lib.records.results import (
        comparisons,
        statistics_choice,
        summarise,
    )

    per_seed = {n: {s: stage_metrics(30.0 + s) for s in range(3)}
                for n in registry.result_stages()}
    per_seed["uda_pixel"] = {s: stage_metrics(30.0 + s, target_statistics=31.0 + 1.5 * s,
                                         target_statistics_test=29.0 + 0.5 * s)
                             for s in range(3)}
    per_seed["oracle"] = {s: stage_metrics(70.0 + s) for s in range(3)}
    for name in registry.pseudo_weak_rows():
        for s in range(3):
            per_seed[name][s]["pseudo_weak_start"] = per_seed[name][s]["pseudo_weak_end"] = {
                "precision": 90.0, "recall": 90.0}
    out = summarise(per_seed, {n: n for n in registry.result_stages()}, ["a", "b"],
                    {"preset": "smoke", "commit": "x", "date": "d", "machine": "m"})
    validate(out)
    choice = statistics_choice(out)
    assert choice["chosen"] and choice["gain"] == pytest.approx(1.5)
    assert (choice["ci_low"], choice["ci_high"]) == pytest.approx((0.2579, 2.7421), abs=1e-4)
    assert len(out["verdicts"]) == 2 * len(registry.comparisons()) - 1
    assert len(comparisons("target_statistics")) == len(registry.comparisons()) - 1
    assert not any(v["stage"] == "adabn" and v["evaluation"] == "target_statistics"
                   for v in out["verdicts"])
    pixel = {v["evaluation"]: v for v in out["verdicts"]
             if v["what"] == "Pixel adaptation (FDA stand-in)"}
    assert pixel["as_trained"]["gain"] == 0 and pixel["as_trained"]["verdict"] == (
        "no clear difference")
    assert pixel["target_statistics"]["gain"] == pytest.approx(-1.5)
    assert "| target BN statistics | -1.50 | [-2.74, -0.26] | 0.035 | hurts |" in \
        render_markdown(out)
    with pytest.raises(ValueError, match="evaluation must be one of"):
        comparisons("target_test")
    out["statistics_choice"]["chosen"] = False
    with pytest.raises(ValueError, match="statistics_choice"):
        validate(out)
