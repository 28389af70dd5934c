import json

import pytest
import torch

from wsda_lib import runs
from wsda_lib.config import override, preset, to_dict


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


def test_config_key_is_stable_and_sensitive():
    a = to_dict(preset("smoke"))
    assert runs.config_key(a) == runs.config_key(to_dict(preset("smoke")))
    assert runs.config_key(a) != runs.config_key(to_dict(override(preset("smoke"),
                                                                  **{"train.lr": 0.5})))


def test_override_names_unknown_fields():
    with pytest.raises(KeyError, match="train.nope"):
        override(preset("smoke"), **{"train.nope": 1})
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
