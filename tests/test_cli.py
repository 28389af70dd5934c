import json

import pytest

from wsda_lib.cli import main


def test_train_then_evaluate_the_checkpoint_gives_the_same_scores(tmp_path, capsys):
    args = ["--preset", "smoke", "--run-dir", str(tmp_path), "--device", "cpu"]
    assert main(["train", *args, "--stage", "source_only", "--set", "train.iterations=5"]) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not trained["loaded"] and 0 < trained["target_test"] < 100
    checkpoint = f"{trained['run']}/checkpoint.pt"
    assert main(["evaluate", "--checkpoint", checkpoint, "--run-dir", str(tmp_path),
                 "--device", "cpu"]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["target_test"]["miou"] == trained["target_test"]


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert main(["train", "--preset", "smoke", "--set", "train.nope=1",
                 "--run-dir", str(tmp_path)]) == 2
    assert "train.nope" in capsys.readouterr().err
    assert main(["train", "--preset", "smoke", "--set", "train.iteration=1",
                 "--run-dir", str(tmp_path)]) == 2
    assert "config has no field 'train.iteration'; did you mean train.iterations" in \
        capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "x/checkpoint.pt")]) == 2
    assert f"checkpoint {tmp_path / 'x/checkpoint.pt'}: no such file" in capsys.readouterr().err


@pytest.mark.parametrize("stage, change, message", [
    ("uda_weak", "adapt.pixel_adaptation=True", "stage 'uda_weak' sets this itself"),
    ("uda_self_training", "adapt.category_alignment=False", "adapt.category_alignment"),
    ("oracle", "train.split='source_train'", "train.split"),
    ("adaptsegnet", "adapt.output_alignment=False", "no target term"),
    ("uda_weak", "adapt.output_alignment=false",
     "adapt.output_alignment='false': expected bool (True or False)"),
    ("source_only", "train.iterations=abc", "train.iterations='abc': expected int"),
])
def test_an_override_that_would_be_ignored_or_misread_is_refused(tmp_path, capsys, stage,
                                                                  change, message):
    args = ["train", "--preset", "smoke", "--stage", stage, "--run-dir", str(tmp_path),
            "--set", change]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before any data or training


def test_train_help_lists_the_stages_and_presets(capsys):
    from wsda_lib.core.config import PRESETS
    from wsda_lib.stages import STAGES

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in [*STAGES, *PRESETS])
    text = text[text.index("options:"):]
    for option in ("--seed", "--device", "--run-dir"):
        line = text[text.index(option):][:120]
        assert "default" in line or "GPU" in line, option


def test_a_mistyped_stage_is_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--preset", "smoke", "--stage", "uda_pxiel", "--run-dir", str(tmp_path)])
    assert stop.value.code == 2
    assert "uda_pxiel" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # no benchmark generated, no run started


def _sampled_indices(rank, world, path):
    """Worker: join a gloo group and record which items this rank's training stream draws."""
    import os

    import torch.distributed as dist

    from wsda_lib.training.engine import batches

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["WSDA_TEST_PORT"])
    dist.init_process_group("gloo", rank=rank, world_size=world)
    stream = batches(_Items(16), batch_size=2, seed=0, device="cpu")
    seen = [int(i) for _ in range(4) for i in next(stream)["index"]]  # one epoch: 4 x 2 x 2
    (path / f"rank{rank}.json").write_text(json.dumps(seen))
    dist.destroy_process_group()


class _Items:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"index": i}


@pytest.mark.slow
def test_ranks_draw_disjoint_training_data(tmp_path, gloo_port):
    import torch.multiprocessing as mp

    mp.spawn(_sampled_indices, args=(2, tmp_path), nprocs=2)
    a, b = (set(json.loads((tmp_path / f"rank{r}.json").read_text())) for r in (0, 1))
    assert len(a) == len(b) == 8 and not a & b and a | b == set(range(16))


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["source_only", "uda_pixel"])
def test_torchrun_two_processes_writes_one_checkpoint_matching_a_single_process(tmp_path, stage):
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "wsda_lib.cli", "train", "--preset", "smoke", "--stage", stage,
           "--run-dir", str(tmp_path), "--device", "cpu",
           "--set", "train.iterations=6", "adapt.iterations=4"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    reported = json.loads(done.stdout.strip().splitlines()[-1])  # printed by rank 0 only
    checkpoints = list(tmp_path.rglob(f"{stage}-*/checkpoint.pt"))
    assert len(checkpoints) == 1 and len(list(tmp_path.rglob("*.tmp"))) == 0
    single = subprocess.run([sys.executable, "-m", "wsda_lib.cli", "evaluate", "--checkpoint",
                             str(checkpoints[0]), "--run-dir", str(tmp_path), "--device", "cpu"],
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    scores = json.loads(single.stdout.strip().splitlines()[-1])
    for split in ("source_val", "target_val", "target_test"):
        assert scores[split]["miou"] == reported[split]
