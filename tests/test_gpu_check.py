"""`wsda gpu-check`: --tiny runs the paper-scale code path on the CPU and writes its JSON;
without CUDA the GPU run stops with one line pointing to --tiny."""

import json

import pytest
import torch

from wsda_lib import cli
from wsda_lib.experiments import gpu_check


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check") / "gpu.json"
    code = cli.main(["gpu-check", "--tiny", "--out", str(out)])
    return code, json.loads(out.read_text())


def test_tiny_run_writes_every_part(tiny):
    code, result = tiny
    assert code == 0 and result["ok"] and result["tiny"] is True
    assert result["command"] == "wsda gpu-check --tiny"
    assert result["preset"] == "paper_gta5" and result["stage"] == "uda_pixel"
    assert all(result["terms"][k] for k in ("output_alignment", "weak_loss",
                                            "category_alignment", "pixel_adaptation"))
    assert result["terms"]["weak_labels"] == "pseudo"
    assert result["sizes"] == {"source": [128, 64], "target": [96, 64],
                               "evaluation_label": [256, 128]}
    assert result["overrides"]["model.backbone_weights"] is None
    assert result["device"] == "cpu" and result["torch"] == torch.__version__
    assert "commit" in result and result["batch_size"] == 1
    for precision in ("fp32", "bf16"):
        part = result["parts"][precision]
        assert part["precision"] == precision and part["steps"] == 2
        assert part["steps_per_second"] > 0 and part["peak_memory_allocated_gib"] is None
        assert set(part["phase_seconds_per_step"]) >= {"forward", "backward", "discriminators"}
        assert {"seg", "weak", "adv", "adv_cw"} <= set(part["last_losses"])
    evaluation = result["parts"]["evaluation"]
    assert evaluation["image_size"] == [96, 64] and evaluation["label_size"] == [256, 128]
    assert evaluation["images_per_second"] > 0
    assert result["parts"]["evaluation_full_input"]["image_size"] == [256, 128]
    assert result["peak_rss_gib"] > 0


def test_without_cuda_one_line_pointing_to_tiny(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["gpu-check", "--out", str(tmp_path / "gpu.json")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "no CUDA device is available" in err and "--tiny" in err
    assert not (tmp_path / "gpu.json").exists()


def test_a_failing_part_is_recorded_not_raised():
    def out_of_memory():
        raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB\nmore detail")

    assert gpu_check._guarded(out_of_memory) == {
        "error": "RuntimeError: CUDA out of memory. Tried to allocate 2 GiB"}


def test_bad_steps_are_one_line(capsys):
    assert cli.main(["gpu-check", "--tiny", "--steps", "0"]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err
