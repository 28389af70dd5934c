"""The notebook series, executed by papermill in the smoke preset, with its outputs checked."""

import json
import math

import nbformat
import pytest

from wsda_lib.reproduce import NOTEBOOKS, reproduce, series

pytestmark = pytest.mark.notebook


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    out = tmp_path_factory.mktemp("series")
    timings = reproduce("smoke", seed=0, out=out, run_dir=out / "runs", device="cpu",
                        notebooks=[NOTEBOOKS / "00_the_domain_gap.ipynb",
                                   NOTEBOOKS / "01_source_only.ipynb"], cell_timeout=600)
    return out, timings


def _outputs(path):
    nb = nbformat.read(path, as_version=4)
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def test_series_lists_the_numbered_notebooks():
    names = [p.name for p in series()]
    assert names[:2] == ["00_the_domain_gap.ipynb", "01_source_only.ipynb"]
    assert names == sorted(names)


def test_00_writes_datasheet_and_figures(executed):
    out, timings = executed
    summary = json.loads((out / "runs/results/smoke/00_domain_gap.json").read_text())
    for domain in ("source", "target"):
        assert sum(summary["datasheet"][domain]["pixel_frequency"]) == pytest.approx(100)
    for name in ("00_samples", "00_class_statistics", "00_weak_labels"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 5000
    outputs = _outputs(out / "notebooks/00_the_domain_gap.ipynb")
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3


def test_01_trains_and_reports_sensible_metrics(executed):
    out, _ = executed
    summary = json.loads((out / "runs/results/smoke/01_source_only_seed0.json").read_text())
    for stage in ("source_only", "oracle"):
        for split in ("source_val", "target_val", "target_test"):
            miou = summary[stage][split]["miou"]
            assert 0 < miou < 100 and not math.isnan(miou)
            assert len(summary[stage][split]["iou"]) == 10
    for name in ("01_learning_curves", "01_per_class_iou", "01_confusion_target",
                 "01_predictions"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 5000
    text = "".join(o.get("text", "") for o in _outputs(out / "notebooks/01_source_only.ipynb"))
    assert "source-only keeps" in text and "trained into" in text


def test_second_run_loads_cached_models(executed):
    out, _ = executed
    reproduce("smoke", seed=0, out=out / "again", run_dir=out / "runs", device="cpu",
              notebooks=[NOTEBOOKS / "01_source_only.ipynb"], cell_timeout=600)
    outputs = _outputs(out / "again/notebooks/01_source_only.ipynb")
    text = "".join(o.get("text", "") for o in outputs)
    assert text.count("loaded from") == 2
