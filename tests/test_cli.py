import json

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
    assert main(["evaluate", "--checkpoint", str(tmp_path / "x/checkpoint.pt")]) == 2
    assert "config.json" in capsys.readouterr().err
