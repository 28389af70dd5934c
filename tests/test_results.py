"""The committed results: figures/results.md is exactly what figures/results.json renders to,
and the JSON follows its schema."""

import json
from pathlib import Path

import pytest

from wsda_lib.results import gap_closed, mean_std, render_markdown, validate, verdict

FIGURES = Path(__file__).resolve().parent.parent / "figures"


def test_gap_closed_and_mean_std_by_hand():
    assert gap_closed(45.5, 36.6, 64.0) == pytest.approx(8.9 / 27.4)
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(2 ** 0.5))
    assert mean_std([5.0]) == (5.0, 0.0)


def test_verdict_says_plainly_when_a_stage_does_not_help():
    assert verdict("X", 30, "Y", 32).startswith("X does not help on this benchmark")
    assert verdict("X", 33, "Y", 32).startswith("X helps")
    assert "no clear difference" in verdict("X", 32.2, "Y", 32)


@pytest.mark.skipif(not (FIGURES / "results.json").exists(), reason="no committed results yet")
def test_committed_results_md_is_rendered_from_results_json():
    results = json.loads((FIGURES / "results.json").read_text())
    validate(results)
    assert (FIGURES / "results.md").read_text() == render_markdown(results)


def test_validate_names_what_is_wrong():
    good = {"preset": "smoke", "commit": "x", "date": "d", "machine": "m", "seeds": [0],
            "classes": ["a"], "stages": []}
    with pytest.raises(ValueError, match="stages"):
        validate(good)
    with pytest.raises(ValueError, match="missing key 'machine'"):
        validate({k: v for k, v in good.items() if k != "machine"})
