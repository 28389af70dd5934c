import json
import os

import pytest
import torch

from wsda_lib.core.config import override, preset
from wsda_lib.training import runs


def test_load_or_train_trains_once_then_loads(tmp_path):
    calls = []

    def train(resume):
        calls.append(1)
        return {"w": torch.arange(3.0)}, {"miou": 42.0}

    cfg = {"stage": "x", "sizes": (1, 2)}
    first = runs.load_or_train(tmp_path, "x", cfg, train)
    second = runs.load_or_train(tmp_path, "x", cfg, train)
    assert calls == [1] and not first.loaded and second.loaded
    assert torch.equal(second.state["w"], torch.arange(3.0)) and second.metrics == {"miou": 42.0}
    assert json.loads((first.dir / "config.json").read_text()) == {"stage": "x", "sizes": [1, 2]}
    other = runs.load_or_train(tmp_path, "x", {"stage": "x", "sizes": (1, 3)}, train)
    assert calls == [1, 1] and other.dir != first.dir


def test_interrupted_training_leaves_no_finished_run(tmp_path):
    def boom(resume):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runs.load_or_train(tmp_path, "x", {"a": 1}, boom)
    assert not any(tmp_path.rglob("config.json"))


def test_atomic_checkpoint_and_clear_error_on_corrupt_file(tmp_path):
    path = tmp_path / "c.pt"
    runs.save_checkpoint(path, {"w": torch.ones(2)})
    assert torch.equal(runs.load_checkpoint(path)["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary left behind
    path.write_bytes(b"truncated")
    with pytest.raises(ValueError, match="c.pt"):
        runs.load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        runs.load_checkpoint(tmp_path / "nope.pt")


def test_the_no_target_term_check_reads_the_loss_weights():
    """The check that refuses an adaptation stage learning from the source alone reads
    LossWeights.target_terms, so a term added to LossWeights counts without more code; the
    source-only L_c (lambda_c_source) is no target term."""
    from wsda_lib.method.objective import LossWeights
    from wsda_lib.stages import stage_config

    cfg = preset("smoke")
    with pytest.raises(ValueError, match="'adaptsegnet' would adapt with no target term"):
        stage_config("adaptsegnet", override(cfg, **{"adapt.output_alignment": False}))

    def terms(stage, **changes):
        return set(LossWeights.from_config(stage_config(stage, override(cfg, **changes)).adapt)
                   .target_terms())

    assert terms("uda_self_training") == {"lambda_adv", "lambda_c", "lambda_cw", "lambda_st"}
    assert terms("wda_point") == {"lambda_adv", "lambda_c", "lambda_cw", "lambda_point"}
    assert terms("uda_weak", **{"adapt.source_weak_loss": True}) == {"lambda_adv", "lambda_c"}


def test_a_checkpoint_with_pickled_objects_is_refused_in_one_short_line(tmp_path):
    """torch refuses a numpy scalar beside the weights under weights_only=True, with a long
    message that advises weights_only=False, which a wsda user cannot pass. The refusal names
    the file and what to do, in one short line, for a run's checkpoint and for backbone
    weights alike."""
    import numpy as np

    from wsda_lib.models.deeplab import load_backbone_weights

    path = tmp_path / "with_numpy.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "best": np.float64(0.5)}, path)
    with pytest.raises(ValueError) as e:
        runs.load_checkpoint(path)
    message = str(e.value)
    assert message.startswith(f"checkpoint {path} holds pickled Python objects besides tensors")
    assert "re-save it" in message and "weights_only=False" not in message
    assert "\n" not in message and "\x1b" not in message and len(message) < 400
    with pytest.raises(ValueError, match=r"the file holds pickled Python objects") as e:
        load_backbone_weights(torch.nn.Linear(1, 1), path)
    assert "weights_only=False" not in str(e.value) and len(str(e.value)) < 400


def _strict_parse(text: str):
    """json.loads as RFC 8259 has it: NaN and Infinity refused."""
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def test_json_the_project_writes_is_strict_and_reads_back_nan_in_score_lists(tmp_path):
    """A class never labelled nor predicted scores NaN: written as null (strict JSON, which
    JSON.parse and jq read), and read back as NaN inside a list of scores, while a null that
    stands for a missing value (not in a list of numbers) stays None."""
    import math

    from wsda_lib.cli import _json
    from wsda_lib.core.atomic import write_json

    path = tmp_path / "metrics.json"
    write_json(path, {"iou": [50.0, float("nan"), 25.0], "miou": 37.5, "ci_low": None,
                      "worst": float("-inf"), "names": ["a", None]})
    data = _strict_parse(path.read_text())
    assert data["iou"] == [50.0, None, 25.0] and data["worst"] is None
    back = runs.read_json(path)
    assert back["iou"][0] == 50.0 and math.isnan(back["iou"][1]) and back["ci_low"] is None
    assert back["names"] == ["a", None]
    assert _strict_parse(_json({"iou": [float("nan"), 1.0]})) == {"iou": [None, 1.0]}


def test_every_committed_record_is_strict_json():
    """Every JSON file the repository commits (figures/, bench/) parses as RFC 8259 JSON."""
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    files = sorted([*repo.glob("figures/*.json"), *repo.glob("bench/*.json")])
    assert len(files) >= 6
    for path in files:
        _strict_parse(path.read_text(encoding="utf-8"))


@pytest.mark.slow
def test_a_run_being_trained_by_another_process_is_refused_naming_it(tmp_path, capsys):
    """Two trainings of the same settings used to share one run folder without a word (the
    work done twice, one result silently winning). While one process holds the run's lock,
    another asking for the same run gets one line naming the holder, before any training;
    once the lock is free it trains, and the next asks load it."""
    from wsda_lib.cli import main
    from wsda_lib.core.config import preset as load_preset
    from wsda_lib.stages import run_config

    run_dir = tmp_path / "runs"
    command = ["train", "--preset", "smoke", "--stage", "source_only", "--run-dir",
               str(run_dir), "--set", "train.iterations=4", "train.eval_every=4"]
    cfg = override(load_preset("smoke"), **{"train.iterations": 4, "train.eval_every": 4})
    from wsda_lib import data

    bench = data.load(cfg.data, run_dir / "data", verbose=False)
    directory = runs.run_dir(run_dir / "models", "source_only",
                             json.loads(json.dumps(run_config("source_only", cfg, 0, bench))))
    with runs.training_lock(directory):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"run {directory} is being trained by process {os.getpid()} on " in err
        assert "wait for it to end (the same command then loads it)" in err
        assert not (directory / "checkpoint.pt").exists()
    assert main(command) == 0 and (directory / "checkpoint.pt").is_file()
    capsys.readouterr()
    assert main(command) == 0 and '"loaded": true' in capsys.readouterr().out
