"""The benchmark's calibration to the real shift, the controls of `make ablation` and what
they need: known inputs -> known outputs, and the committed record checked against the code."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from wsda_lib.core.config import preset
from wsda_lib.data import synthetic
from wsda_lib.experiments import ablation, calibration
from wsda_lib.experiments.calibration import PAPER_SOURCE_ONLY, TARGETS, meets_targets, shift_match
from wsda_lib.method.pixel_adaptation import colour_jitter_like, restyle_source
from wsda_lib.records.results import attach_controls, statistics_choice, validate, verdict_records
from wsda_lib.stages import run_config, stage_config
from wsda_lib.training import runs

FIGURES = Path(__file__).resolve().parent.parent / "figures"
NAMES = list(PAPER_SOURCE_ONLY)


def test_shift_match_by_hand():
    paper = [PAPER_SOURCE_ONLY[n] for n in NAMES]
    same = shift_match(paper, NAMES)
    assert same["spearman_rho"] == pytest.approx(1.0) and same["miou"] == pytest.approx(49.62)
    assert same["min_class"] == "sidewalk" and same["min_class_iou"] == 16.8
    # the ranks reversed: rho = -1
    order = np.argsort(paper)
    reversed_row = np.empty(10)
    reversed_row[order] = np.arange(10)[::-1]
    assert shift_match(reversed_row, NAMES)["spearman_rho"] == pytest.approx(-1.0)
    # one swap of neighbours in rank: rho = 1 - 6 * 2 / (10 * 99) = 0.9879
    swapped = list(paper)
    i, j = NAMES.index("road"), NAMES.index("building")  # 75.8 and 77.2 are neighbours
    swapped[i], swapped[j] = swapped[j], swapped[i]
    assert shift_match(swapped, NAMES)["spearman_rho"] == pytest.approx(1 - 12 / 990)
    with pytest.raises(ValueError, match="one IoU for each of"):
        shift_match(paper[:9], NAMES[:9])


def test_meets_targets_reads_each_target():
    row = {"source_only": {"spearman_rho": 0.81, "miou": 45.0, "min_class_iou": 6.0}}
    assert meets_targets(row) == {"spearman_rho": True, "source_only_miou": True,
                                  "min_class_iou": True, "oracle_miou": None}
    row = {"source_only": {"spearman_rho": 0.79, "miou": 44.0, "min_class_iou": 4.9},
           "oracle_miou": 81.0}
    assert not any(meets_targets(row).values())
    assert TARGETS["source_only_miou"] == pytest.approx((44.62, 54.62))


def test_variants_change_what_they_say_and_unknown_names_are_refused():
    v1 = synthetic.domains("v1")
    assert v1 == {"source": synthetic.V1_SOURCE, "target": synthetic.V1_TARGET}
    calibrated = synthetic.domains()
    assert calibrated["source"] == synthetic.V1_SOURCE  # only the target was calibrated
    assert calibrated["target"] != synthetic.V1_TARGET
    assert calibrated["target"].rendering.palette["fence"] == (0.46, 0.43, 0.38)
    assert calibrated["target"].scene.sidewalk_factor == (1.1, 1.35)
    assert synthetic.fingerprint(v1) != synthetic.fingerprint(calibrated)
    with pytest.raises(KeyError, match="unknown benchmark variant 'v99'"):
        synthetic.domains("v99")
    synthetic.VARIANTS["bad"] = ("", {"target.rendering.colour": 1})
    try:
        with pytest.raises(KeyError, match="Rendering has no field 'colour'"):
            synthetic.domains("bad")
    finally:
        del synthetic.VARIANTS["bad"]


def test_runs_on_the_embedded_benchmark_are_keyed_by_its_parameters(monkeypatch):
    cfg = preset("smoke")
    key = runs.config_key(run_config("source_only", cfg, 0))
    assert run_config("source_only", cfg, 0)["benchmark"] == synthetic.fingerprint(
        synthetic.DOMAINS)
    monkeypatch.setattr(synthetic, "DOMAINS", synthetic.domains("v1"))
    assert runs.config_key(run_config("source_only", cfg, 0)) != key
    # a loaded benchmark keys by its own fingerprint; one without a fingerprint is refused
    assert run_config("source_only", cfg, 0, SimpleNamespace(fingerprint="f"))["benchmark"] == "f"
    with pytest.raises(ValueError, match="no fingerprint"):
        run_config("source_only", cfg, 0, SimpleNamespace(fingerprint=None))


@pytest.mark.skipif(not (FIGURES / "benchmark_calibration.json").exists(),
                    reason="no committed calibration yet")
def test_the_committed_calibration_record_is_of_these_variants():
    record = json.loads((FIGURES / "benchmark_calibration.json").read_text())
    assert record["calibrated"] == synthetic.CALIBRATED and record["split"] == "target_val"
    assert [v["variant"] for v in record["variants"]] == list(synthetic.VARIANTS)
    for row in record["variants"]:
        changes = json.loads(json.dumps(synthetic.VARIANTS[row["variant"]][1]))
        assert row["changes"] == changes and row["meets"] == meets_targets(row)
    # the benchmark is the first variant whose endpoints meet every target
    first = next(v for v in record["variants"] if all(
        v["meets"][k] for k in ("spearman_rho", "source_only_miou", "min_class_iou")))
    assert first["variant"] == synthetic.CALIBRATED and first["meets"]["oracle_miou"] is True


def test_the_colour_control_moves_images_as_far_as_fda_in_no_direction():
    g = torch.Generator().manual_seed(0)
    source = 0.4 + 0.2 * torch.rand(3, 3, 16, 32)          # mid-range: no clamping
    restyled = source + 0.05                                # a mean absolute change of 0.05
    out = colour_jitter_like(source, restyled, g)
    assert (out - source).abs().mean((1, 2, 3)) == pytest.approx(torch.full((3,), 0.05),
                                                                   abs=1e-4)
    assert not torch.allclose(out - source, restyled - source, atol=1e-3)
    again = colour_jitter_like(source, restyled, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    target = torch.rand(3, 3, 16, 32)
    fda = restyle_source(source, target, 1.0, 0.05, torch.Generator().manual_seed(1))
    colour = restyle_source(source, target, 1.0, 0.05, torch.Generator().manual_seed(1),
                            mode="colour")
    change = lambda x: (x - source).abs().mean().item()  # noqa: E731
    assert change(colour) == pytest.approx(change(fda), rel=0.05)
    with pytest.raises(ValueError, match="adapt.restyle='cyclegan'"):
        restyle_source(source, target, 1.0, 0.05, g, mode="cyclegan")


def test_the_all_present_control_labels_every_class_present_whatever_the_scores():
    """A threshold near 0 would still call a class absent once its logits sink far enough;
    the control's labels are ones even for logits of -100 (pooled score far below any T)."""
    from wsda_lib.training.engine import _target_weak_labels

    a = stage_config("uda_weak_all_present", preset("smoke")).adapt
    logits = torch.full((2, 10, 4, 8), -100.0)
    truth = torch.zeros(2, 10)
    truth[0, 3] = 1
    labels, log = _target_weak_labels(a, None, logits, {"weak_label": truth})
    assert torch.equal(labels, torch.ones(2, 10))
    assert float(log["pseudo_recall"]) == 100
    assert float(log["pseudo_precision"]) == pytest.approx(5.0)


def test_the_ablation_judges_each_control_by_the_paired_test(monkeypatch, tmp_path):
    base = {"uda_self_training": 40.0, "uda_self_training_no_labels": 41.0, "uda_weak": 31.0,
            "adaptsegnet": 29.0, "no_target_term": 29.0,
            "uda_weak_all_present": 30.0, "uda_paper_labels": 30.5, "wda_category": 36.0,
            "wda_weak": 36.0, "uda_pixel": 41.0, "uda_colour": 35.0}

    def test_miou(name, seed):
        # seed-dependent spread; the stage minus its control is fixed by `base`, plus noise
        return base[name] + seed + (0.2 * seed if name in ("uda_weak", "wda_category",
                                                           "adaptsegnet") else 0)

    def fake_run_stage(name, cfg, bench, seed, *args, **kwargs):
        # on target val the paper's labels score 1 higher than on test: the choice (val)
        # and the verdict (test) then disagree, so a swapped split shows
        val = test_miou(name, seed) + (1.0 if name == "uda_paper_labels" else 0.0)
        return SimpleNamespace(metrics={"target_val": {"miou": val},
                                        "target_test": {"miou": test_miou(name, seed)}})

    monkeypatch.setattr(ablation, "run_stage", fake_run_stage)
    monkeypatch.setattr(ablation, "load", lambda *a, **k: None)
    # a series' results.json of the same preset and seeds, and of the same runs (its stages
    # that are also the controls' have the same numbers), which takes the control rows
    series = json.loads((FIGURES / "results.json").read_text()) | {"preset": "smoke"}
    for s in series["stages"]:
        if s["stage"] in base:
            s["miou_per_seed"] = s["target_val_miou_per_seed"] = [
                test_miou(s["stage"], seed) for seed in (0, 1, 2)]
    series["verdicts"] = verdict_records(series)
    series["statistics_choice"] = statistics_choice(series)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.json").write_text(json.dumps(series))
    logged = []
    record = ablation.run_ablation("smoke", (0, 1, 2), tmp_path, tmp_path / "out",
                                   log=logged.append)
    joined = json.loads((tmp_path / "out" / "results.json").read_text())
    validate(joined)
    assert joined["controls"] == record["controls"] and joined["stages"] == series["stages"]
    assert "| Pseudo-weak labels, against every class labelled present |" in (
        tmp_path / "out" / "results.md").read_text()
    # the choice, on target val: 31 + 1.2 s against 31.5 + s, gains -0.5, -0.3, -0.1; on
    # target test the same row's verdict sees gains +0.5, +0.7, +0.9
    c = record["choice"]
    assert c["split"] == "target_val" and not c["stands"] and c["gain"] == pytest.approx(-0.3)
    assert "it does not stand." in (tmp_path / "out" / "ablation.md").read_text()
    paper = next(r for r in record["controls"] if r["control"] == "uda_paper_labels")
    assert paper["gain"] == pytest.approx(0.7) and paper["split"] == "target_test"
    # a results.json whose shared stages have other numbers (other runs) takes no controls
    other = series | {"stages": [s | {"miou_per_seed": [1.0, 2.0, 3.0]} for s in series["stages"]]}
    assert attach_controls(other, record) is other
    by = {(r["stage"], r["control"]): r for r in record["controls"]}
    assert by[("uda_self_training", "uda_self_training_no_labels")]["verdict"] == "hurts"
    assert by[("adaptsegnet", "no_target_term")]["gain"] == pytest.approx(0.2)  # 0, .2, .4
    assert by[("uda_weak", "uda_weak_all_present")]["verdict"] == "helps"  # +1, +1.2, +1.4
    assert by[("uda_weak", "uda_weak_all_present")]["gain"] == pytest.approx(1.2)
    # +0, +0.2, +0.4: mean 0.2, interval 0.2 ± 4.303 * 0.2 / sqrt(3), which holds 0
    assert by[("wda_category", "wda_weak")]["verdict"] == "no clear difference"
    assert by[("uda_pixel", "uda_colour")]["ci_low"] == pytest.approx(6.0)
    text = (tmp_path / "out" / "ablation.md").read_text()
    assert text == ablation.render_markdown(record) and "| hurts |" in text
    assert json.loads((tmp_path / "out" / "ablation.json").read_text())["seeds"] == [0, 1, 2]
    assert calibration.SEED == 0
    # other seeds than the series': the rows are not paired with its stages, so not added
    ablation.run_ablation("smoke", (0, 1), tmp_path, tmp_path / "out", log=logged.append)
    assert "controls" in json.loads((tmp_path / "out" / "results.json").read_text())
    assert json.loads((tmp_path / "out" / "results.json").read_text())["controls"] == (
        record["controls"]) and "seeds [0, 1]: not added" in logged[-1]


@pytest.mark.skipif(not (FIGURES / "benchmark_calibration.json").exists(),
                    reason="no committed calibration yet")
def test_the_readme_states_the_calibration_the_record_holds():
    record = json.loads((FIGURES / "benchmark_calibration.json").read_text())
    readme = (FIGURES.parent / "README.md").read_text()
    assert calibration.summary(record) in readme
    assert calibration.render_markdown(record) in readme


@pytest.mark.skipif(not (FIGURES / "ablation.json").exists(), reason="no committed controls yet")
def test_the_committed_controls_are_what_the_docs_state():
    """figures/ablation.md is rendered from ablation.json; the README and docs/method.md state
    its choice in the words `choice_summary` gives, and §15 each control's verdict; the
    controls in results.json are the record's."""
    record = json.loads((FIGURES / "ablation.json").read_text())
    assert (FIGURES / "ablation.md").read_text() == ablation.render_markdown(record)
    readme, method = (" ".join((FIGURES.parent / name).read_text().split())
                      for name in ("README.md", "docs/method.md"))
    said = ablation.choice_summary(record["choice"])
    assert said in readme and said in method and record["choice"]["split"] == "target_val"
    missing = [r["what"] for r in record["controls"]
               if f"*{r['what']}*: {r['verdict']}." not in method]
    assert not missing, missing
    results = json.loads((FIGURES / "results.json").read_text())
    assert results["controls"] == record["controls"]


