"""stages/: one record per stage, and everything derived from the records: the results
table's rows, the paper's numbers, the ladder of verdicts, the controls of `make ablation`,
the annotation-cost figure and the schedule trade; titles filled from the resolved config."""

from types import SimpleNamespace

import pytest
import torch
from fakes import stage_metrics

from wsda_lib.core.config import override, preset
from wsda_lib.experiments import ablation
from wsda_lib.records.results import (
    comparisons,
    render_markdown,
    summarise,
    validate,
)
from wsda_lib.stages import (
    CHOSEN_SELF_TRAINING,
    STAGES,
    Comparison,
    Control,
    Stage,
    Switches,
    check_chain_uses,
    registry,
    run_config,
    run_stage,
    stage_config,
    title,
)
from wsda_lib.training.runs import config_key


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


def test_a_stage_trains_with_its_switches_and_settings_whatever_the_base_config():
    """A record's switches and settings are what its resolved config holds, even when the
    base config sets those fields otherwise (a stage's own fields win; the CLI refuses an
    override of them, stages.registry.fixed_fields); Switches() is every term off but the
    output-space alignment the config keeps."""
    import dataclasses

    flipped = override(preset("default"), **{"adapt.weak_labels": "point",
                                             "adapt.weak_loss": True,
                                             "adapt.category_alignment": True,
                                             "adapt.pixel_adaptation": True})
    for name, record in STAGES.items():
        resolved = stage_config(name, flipped)
        for field in dataclasses.fields(Switches) if record.switches else ():
            assert getattr(resolved.adapt, field.name) == getattr(record.switches, field.name)
        for dotted, value in record.settings.items():
            section, field = dotted.split(".")
            assert getattr(getattr(resolved, section), field) == value, (name, dotted)
    assert stage_config("adaptsegnet", flipped).adapt.output_alignment
    assert not stage_config("adaptsegnet", flipped).adapt.pixel_adaptation
    assert registry.fixed_fields("uda_self_training") >= {"adapt.self_training",
                                                          "adapt.pixel_adaptation"}


def test_every_comparison_and_control_names_a_stage():
    for what, a, b in (*registry.comparisons(), *registry.controls()):
        assert a in STAGES and b in STAGES and a != b, what
    assert {r: STAGES[r].paper_miou for r in ("source_only", "oracle")} == \
        {"source_only": 36.6, "oracle": 64.0}


def test_stage_switches_that_cannot_train_are_refused_by_name():
    cfg = preset("smoke")
    with pytest.raises(ValueError, match="adapt.weak_labels='guess': expected one of"):
        stage_config("source_only", override(cfg, **{"adapt.weak_labels": "guess"}))
    bad = {"adapt.weak_labels": "none", "adapt.weak_loss": True}
    with pytest.raises(ValueError, match="need weak labels"):
        stage_config("source_only", override(cfg, **bad))
    with pytest.raises(ValueError, match="adapt.self_training"):
        stage_config("source_only", override(cfg, **{"adapt.self_training": True,
                                                      "adapt.weak_labels": "present"}))
    with pytest.raises(ValueError, match="train.split"):
        stage_config("source_only", override(cfg, **{"train.split": "target_test"}))


def test_each_stage_is_a_config(smoke_bench):
    """A stage differs from another only by its config switches and the stage it starts
    from: the resolved config and the start tell every stage apart (uda_pixel_continued is
    uda_pixel's config, started from uda_pixel's weights)."""
    from wsda_lib.stages import STAGES, run_config, stage
    from wsda_lib.training.runs import config_key

    keys = set()
    for name in STAGES:
        config = run_config(name, preset("smoke"), seed=0)
        keys.add((config_key({k: v for k, v in config.items() if k != "stage"}),
                  stage(name).start_from))
    assert len(keys) == len(STAGES)
    uda = stage_config("uda_category", preset("smoke")).adapt
    assert (uda.weak_labels, uda.weak_loss, uda.category_alignment, uda.pixel_adaptation,
            uda.self_training) == ("pseudo", True, True, False, False)


def test_a_stage_does_not_depend_on_what_ran_before_it(smoke_bench, tmp_path):
    cfg = override(preset("smoke"), **{"train.iterations": 3, "train.eval_every": 3})
    first = run_stage("source_only", cfg, smoke_bench, 0, "cpu", tmp_path / "a", progress=False)
    torch.rand(1000)  # consume the global generator, as an earlier cell or stage would
    second = run_stage("source_only", cfg, smoke_bench, 0, "cpu", tmp_path / "b", progress=False)
    assert not second.run.loaded
    assert first.metrics["history"]["loss"] == second.metrics["history"]["loss"]


def test_each_control_differs_from_its_stage_only_where_it_should():
    cfg = preset("default")
    a = {k: v for k, v in vars(stage_config("uda_pixel_continued", cfg).adapt).items()}
    b = {k: v for k, v in vars(stage_config("uda_self_training", cfg).adapt).items()}
    assert {k for k in a if a[k] != b[k]} == {"self_training"}
    assert STAGES["uda_pixel_continued"].start_from == STAGES["uda_self_training"].start_from
    c = vars(stage_config("uda_colour", cfg).adapt)
    d = vars(stage_config("uda_pixel", cfg).adapt)
    assert {k for k in c if c[k] != d[k]} == {"restyle"}
    e, f = vars(stage_config("wda_category", cfg).adapt), vars(stage_config("wda_weak", cfg).adapt)
    assert {k for k in e if e[k] != f[k]} == {"category_alignment"}
    g, h = vars(stage_config("uda_weak_all_present", cfg).adapt), vars(
        stage_config("uda_weak", cfg).adapt)
    assert {k for k in g if g[k] != h[k]} == {"weak_labels"}
    assert {s for _, a, b in registry.controls() for s in (a, b)} <= set(STAGES)


def test_a_restyle_that_no_stage_would_apply_is_refused_by_name():
    from wsda_lib.stages import check_chain_uses

    cfg = override(preset("smoke"), **{"adapt.restyle": "colour"})
    with pytest.raises(ValueError, match="adapt.restyle='colour': no stage of source_only -> "
                       "uda_weak uses pixel adaptation"):
        check_chain_uses("uda_weak", cfg)
    check_chain_uses("uda_pixel", cfg)      # pixel adaptation: the control's own setting
    check_chain_uses("uda_colour", preset("smoke"))


def test_self_training_fields_key_only_stages_that_self_train():
    cfg = preset("smoke")
    changed = override(cfg, **{"adapt.st_cap": 0.8, "adapt.st_augment": False})
    for name in ("uda_pixel", "wda_image", "adaptsegnet"):
        assert config_key(run_config(name, changed, 0)) == config_key(run_config(name, cfg, 0))
    assert config_key(run_config("uda_self_training", changed, 0)) != config_key(
        run_config("uda_self_training", cfg, 0))
    # keys made before these fields existed (commit 9d67ff6) are kept, for the stages that
    # self-train too (the round of then, spelled out now that the defaults are the chosen
    # round); a field away from its reference value is keyed at that value
    before = override(cfg, **{"adapt.st_cap": 0.9, "adapt.st_label_statistics": "running",
                              "adapt.st_augment": False})
    for name, key in (("uda_self_training", "a4920a3f8cd7"), ("uda_pixel", "39d5b7b1d90d"),
                      ("adaptsegnet", "261782de559b")):
        assert config_key(run_config(name, before, 0)) == key, name
    for name in ("uda_pixel", "adaptsegnet"):   # the new defaults retrain no stage before it
        assert config_key(run_config(name, cfg, 0)) == config_key(run_config(name, before, 0))
    # the default round is keyed as the same round spelled out (the runs of `make mechanisms`)
    chosen = override(cfg, **CHOSEN_SELF_TRAINING)
    assert run_config("uda_self_training", cfg, 0) == run_config("uda_self_training", chosen, 0)
    assert run_config("uda_self_training", cfg, 0)["adapt"]["st_label_statistics"] == "target"
    with pytest.raises(ValueError, match="adapt.st_cap, adapt.st_augment: no stage of "
                                         "source_only -> uda_pixel self-trains"):
        check_chain_uses("uda_pixel", changed)
    check_chain_uses("wda_self_training", changed)


def test_pseudo_labels_made_with_other_statistics_never_share_a_folder():
    """The default round makes its labels with target statistics; under the defaults before
    it (running statistics) the class-balanced candidate {st_cap: 1.0} had the very same
    key_config. Their folder keys differ, because pseudo_label_key names the statistics
    whatever the default."""
    from wsda_lib.core.config import key_config
    from wsda_lib.stages import pseudo_label_key

    cfg = stage_config("uda_self_training", preset("smoke"))
    running = override(cfg, **{"adapt.st_label_statistics": "running"})
    assert pseudo_label_key(cfg) != pseudo_label_key(running)
    assert pseudo_label_key(cfg)["st_label_statistics"] == "target"
    assert {k: v for k, v in pseudo_label_key(cfg).items() if k != "st_label_statistics"} == \
        key_config(cfg)
