"""stages/: one record per stage, and everything derived from the records: the results
table's rows, the paper's numbers, the ladder of verdicts, the controls of `make ablation`,
the annotation-cost figure and the schedule trade; titles filled from the resolved config."""

from types import SimpleNamespace

import pytest
from fakes import stage_metrics

from wsda_lib.core.config import override, preset
from wsda_lib.experiments import ablation
from wsda_lib.records.results import comparisons, render_markdown, summarise, validate
from wsda_lib.stages import STAGES, Comparison, Control, Stage, Switches, registry, title


@pytest.fixture
def one_more_stage(monkeypatch):
    """A stage added as one record: a result row with a paper number, a step of the ladder
    against the full recipe, a control, an annotation cost and a place in the trade."""
    stages = dict(STAGES)
    names = list(stages)
    record = Stage("UDA: a new term ({pooling})", "uda_pixel", Switches("pseudo", weak_loss=True),
                   short_title="UDA: new", result_row=True, paper_miou=50.0,
                   annotation=("UDA: nothing more", 0),
                   comparison=Comparison("uda_pixel", "A new term"),
                   controls=(Control("uda_colour", "A new term, against colour jitter"),),
                   trade=True)
    at = names.index("uda_self_training")  # a row between the full recipe and self-training
    monkeypatch.setattr(registry, "STAGES", {**{n: stages[n] for n in names[:at]},
                                             "uda_new": record,
                                             **{n: stages[n] for n in names[at:]}})
    return record


def test_a_stage_defined_by_one_record_appears_in_every_table(one_more_stage):
    rows = registry.result_stages()
    assert rows[rows.index("uda_pixel") + 1] == "uda_new" and rows[-1] == "oracle"
    assert registry.paper_miou()["uda_new"] == 50.0
    assert registry.short_titles()["uda_new"] == "UDA: new"
    assert registry.annotation()["uda_new"] == ("UDA: nothing more", 0)
    assert ("A new term", "uda_new", "uda_pixel") in registry.comparisons()
    assert ("A new term", "uda_new", "uda_pixel") in comparisons("target_statistics")
    assert ("A new term, against colour jitter", "uda_new", "uda_colour") in registry.controls()
    assert "uda_new" in registry.trade_stages()
    assert title("uda_new", preset("default")) == "UDA: a new term (N = 8385)"
    # results.json: a row, its paper number and its verdicts both ways, valid by the schema
    weak = ({"precision": 90.0, "recall": 90.0},) * 2
    per_seed = {n: {s: stage_metrics(30.0 + s + (n == "uda_new") + 40 * (n == "oracle"),
                                     weak if n in registry.pseudo_weak_rows() else None)
                    for s in range(3)} for n in rows}
    assert "uda_new" in registry.pseudo_weak_rows()
    results = summarise(per_seed, {n: n for n in rows}, ["a", "b"],
                        {"preset": "default", "commit": "0", "date": "d", "machine": "m"})
    validate(results)
    row = next(s for s in results["stages"] if s["stage"] == "uda_new")
    assert row["paper_miou"] == 50.0 and row["miou_per_seed"] == [31.0, 32.0, 33.0]
    assert [v["evaluation"] for v in results["verdicts"] if v["what"] == "A new term"] == \
        ["as_trained", "target_statistics"]
    assert "| A new term |" in render_markdown(results)


def test_a_control_in_a_record_is_trained_and_judged_by_make_ablation(one_more_stage, monkeypatch,
                                                                        tmp_path):
    trained = []

    def fake_run_stage(name, cfg, bench, seed, device, root, progress):
        trained.append((name, seed))
        miou = 40.0 + seed + (name == "uda_new")
        return SimpleNamespace(metrics={"target_val": {"miou": miou},
                                        "target_test": {"miou": miou}})

    monkeypatch.setattr(ablation, "load", lambda *a, **k: None)
    monkeypatch.setattr(ablation, "run_stage", fake_run_stage)
    record = ablation.run_ablation("default", seeds=(0, 1), run_dir=tmp_path, out=tmp_path,
                                   progress=False, log=lambda *a: None)
    row = next(r for r in record["controls"] if r["stage"] == "uda_new")
    assert row["control"] == "uda_colour" and row["what"] == "A new term, against colour jitter"
    assert row["stage_miou"]["target_test"] == [41.0, 42.0] and row["gain"] == pytest.approx(1.0)
    assert row["stage_title"] == "UDA: a new term (N = 8385)"
    assert {("uda_new", 0), ("uda_new", 1)} <= set(trained)
    assert len(record["controls"]) == len(registry.controls())


def test_titles_are_filled_from_the_resolved_config():
    """A title that states a setting states the one the stage trains with: under --set, in
    the full preset, and the paper's pooling where a stage sets it."""
    default = preset("default")
    assert title("uda_weak", default) == "UDA: pseudo-weak labels + L_c (N = 8385)"
    changed = override(default, **{"adapt.pool_positions": 100})
    assert title("uda_weak", changed) == "UDA: pseudo-weak labels + L_c (N = 100)"
    assert title("uda_paper_labels", changed).endswith("the paper's pooling (N = h·w)")
    assert "1000 more steps" in title("uda_pixel_continued", default)
    assert "4000 more steps" in title("uda_pixel_continued", preset("full"))


def test_a_stage_sets_its_switches_by_name_and_every_field_exists():
    """Every override names a config field (override() refuses an unknown one), and the
    switches of a record are AdaptConfig's own names."""
    for record in STAGES.values():
        override(preset("default"), **record.overrides)      # raises on an unknown field
        if record.switches:
            assert set(record.switches.overrides()) <= set(record.overrides)
    assert STAGES["uda_pixel"].overrides["adapt.pixel_adaptation"] is True
    assert STAGES["wda_point"].switches.weak_labels == "point"


def test_every_comparison_and_control_names_a_stage():
    for what, a, b in (*registry.comparisons(), *registry.controls()):
        assert a in STAGES and b in STAGES and a != b, what
    assert {r: STAGES[r].paper_miou for r in ("source_only", "oracle")} == \
        {"source_only": 36.6, "oracle": 64.0}
