"""The committed results: figures/results.md is exactly what figures/results.json renders to,
and the JSON follows its schema."""

import json
from pathlib import Path

import pytest

from wsda_lib.results import (
    gap_closed,
    judge,
    mean_std,
    render_markdown,
    validate,
    verdict,
    verdicts,
)

FIGURES = Path(__file__).resolve().parent.parent / "figures"


def test_gap_closed_and_mean_std_by_hand():
    assert gap_closed(45.5, 36.6, 64.0) == pytest.approx(8.9 / 27.4)
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(2 ** 0.5))
    assert mean_std([5.0]) == (5.0, 0.0)


def test_verdict_says_plainly_when_a_stage_does_not_help():
    assert verdict("X", 30, "Y", 32).startswith("X: does not help on this benchmark — 30.0")
    assert verdict("X", 33, "Y", 32).startswith("X: helps")
    assert verdict("X", 15.63, "Y", 15.58) == ("X: no clear difference — 15.6 mIoU against 15.6 "
                                               "for Y, on target val (+0.0, one seed: within "
                                               "±0.5).")


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
    assert all(line in readme for line in table)
    for line in verdicts(results):
        assert line in " ".join(readme.split()), line


def test_judge_by_hand():
    assert judge([31.0, 32.0, 33.0], [30.0, 30.5, 31.0]) == ("helps", "+1.5 ± 0.3 over 3 seeds")
    # a steady gain below the 0.5 mIoU floor is no clear difference, however small its error
    assert judge([30.3, 30.3], [30.0, 30.0])[0] == "no clear difference"
    assert judge([29.0, 28.0, 27.0], [30.0, 30.5, 31.0])[0] == "does not help"
    with pytest.raises(ValueError, match="one per seed"):
        judge([1.0, 2.0], [1.0])


def test_validate_names_what_is_wrong():
    good = {"preset": "smoke", "commit": "x", "date": "d", "machine": "m", "seeds": [0],
            "classes": ["a"], "stages": []}
    with pytest.raises(ValueError, match="stages"):
        validate(good)
    with pytest.raises(ValueError, match="missing key 'machine'"):
        validate({k: v for k, v in good.items() if k != "machine"})


def test_results_carry_the_pseudo_weak_labels_start_and_end_by_hand():
    from wsda_lib.results import ABLATION, summarise

    def metrics(miou, weak=None):
        m = {s: {"miou": miou, "iou": [miou, miou]} for s in ("target_val", "target_test")}
        if weak:
            m["pseudo_weak_start"], m["pseudo_weak_end"] = weak
        return m

    per_seed = {name: {0: metrics(30.0), 1: metrics(32.0)} for name in ABLATION}
    per_seed["uda_weak"] = {0: metrics(30.0, ({"precision": 80.0, "recall": 90.0},
                                              {"precision": 70.0, "recall": 100.0})),
                            1: metrics(32.0, ({"precision": 84.0, "recall": 88.0},
                                              {"precision": 74.0, "recall": 98.0}))}
    per_seed["oracle"] = {0: metrics(70.0), 1: metrics(72.0)}
    out = summarise(per_seed, {n: n for n in ABLATION}, ["a", "b"],
                    {"preset": "smoke", "commit": "x", "date": "d", "machine": "m"})
    by = {s["stage"]: s for s in out["stages"]}
    weak = by["uda_weak"]["pseudo_weak_labels"]
    assert weak["pseudo_weak_precision_start"] == {"per_seed": [80.0, 84.0], "mean": 82.0}
    assert weak["pseudo_weak_recall_end"] == {"per_seed": [100.0, 98.0], "mean": 99.0}
    assert "pseudo_weak_labels" not in by["adaptsegnet"]
    assert "| uda_weak | 82.0 -> 72.0 | 89.0 -> 99.0 |" in render_markdown(out)
