"""A day-long run is safe: it resumes after a kill with the same result, bad settings are
refused before the first step, a failed save loses nothing, checkpoints load from other tools
or fail by name, and a run's key says what changes the result."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from wsda_lib.cli import main
from wsda_lib.core.config import override, preset
from wsda_lib.data.classes import EMBEDDED
from wsda_lib.stages import build_model, load_weights, run_config
from wsda_lib.training import runs
from wsda_lib.training.engine import train_supervised

SMOKE = ["--preset", "smoke", "--device", "cpu"]
LONGER = ["train.iterations=60", "adapt.iterations=40", "train.eval_every=20",
          "train.checkpoint_every=5"]


def _train(run_dir, stage, extra=()):
    return [sys.executable, "-m", "wsda_lib.cli", "train", *SMOKE, "--stage", stage,
            "--run-dir", str(run_dir), "--set", *LONGER, *extra]


def _finish(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _kill_during(cmd, run_dir, stage):
    """Start `cmd`, wait for the stage's first resume checkpoint, then SIGKILL it a random
    moment later (a save may be under way). Returns the step it resumed from."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(run_dir.glob(f"models/{stage}-*/resume.pt")) and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(random.uniform(0, 0.3))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [resume] = run_dir.glob(f"models/{stage}-*/resume.pt")
    assert not (resume.parent / "config.json").exists(), "finished before the kill"
    return runs.load_checkpoint(resume)["step"]


def _same_run(a, b, stage):
    [ca] = a.glob(f"models/{stage}-*/checkpoint.pt")
    [cb] = b.glob(f"models/{stage}-*/checkpoint.pt")
    wa, wb = runs.load_checkpoint(ca)["model"], runs.load_checkpoint(cb)["model"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ma, mb = (json.loads((c.parent / "metrics.json").read_text()) for c in (ca, cb))
    for m in (ma, mb):
        for k in ("seconds", "images_per_second", "phase_seconds"):
            del m["history"][k]
    assert ma == mb
    assert not list(cb.parent.glob("resume.pt")) and not list(b.rglob("*.tmp"))


@pytest.mark.parametrize("stage, resume_by", [("source_only", "cli"), ("uda_pixel", "cli"),
                                              ("uda_pixel", "notebook")])
@pytest.mark.slow
def test_a_run_killed_at_a_random_step_resumes_to_the_same_weights_and_metrics(tmp_path, stage,
                                                                             resume_by):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _finish(_train(whole, stage))
    if stage != "source_only":  # the kill hits the adaptation stage, not the one before
        _finish(_train(killed, "source_only"))
    step = _kill_during(_train(killed, stage), killed, stage)
    assert step >= 5
    if resume_by == "cli":
        _finish(_train(killed, stage))
    else:  # what session.Session.stage calls, in this process
        from wsda_lib.data import load
        from wsda_lib.stages import run_stage

        changes = {k: eval(v) for k, v in (c.split("=") for c in LONGER)}
        cfg = override(preset("smoke"), **changes)
        bench = load(cfg.data, killed / "data", verbose=False)
        assert not run_stage(stage, cfg, bench, 0, "cpu", killed / "models",
                             progress=False).run.loaded
    _same_run(whole, killed, stage)


def test_a_kill_during_a_save_leaves_no_temporary_file(tmp_path):
    """A process killed inside atomic_write leaves its temporary; the next write into the
    folder (the restarted run's) removes it."""
    script = ("import os, signal, sys\nfrom wsda_lib.core.atomic import atomic_write\n"
              "def half(f):\n    f.write(b'11 bytes...'); f.flush()\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n"
              "atomic_write(sys.argv[1], half)\n")
    target = tmp_path / "checkpoint.pt"
    subprocess.run([sys.executable, "-c", script, str(target)], timeout=60)
    [stray] = tmp_path.glob(".checkpoint.pt.*.tmp")
    assert stray.stat().st_size == 11 and not target.exists()
    runs.save_checkpoint(target, {"w": torch.ones(1)})
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_run_files_are_readable_by_group_and_others(tmp_path, capsys):
    old = os.umask(0o022)
    try:
        assert main(["train", *SMOKE, "--run-dir", str(tmp_path), "--set",
                     "train.iterations=2"]) == 0
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o644)}


@pytest.mark.parametrize("change, message", [
    ("train.iterations=abc", "train.iterations='abc': expected int"),
    ("adapt.lambda_adv=-1", "adapt.lambda_adv=-1.0: expected >= 0"),
    ("adapt.lambda_c=-1", "adapt.lambda_c=-1.0: expected >= 0"),
    ("adapt.lambda_cw=-0.5", "adapt.lambda_cw=-0.5: expected >= 0"),
    ("adapt.fda_prob=2", "adapt.fda_prob=2.0: expected in [0, 1]"),
    ("train.grad_clip=-1", "train.grad_clip=-1.0: expected > 0"),
    ("adapt.pseudo_threshold=1.5", "adapt.pseudo_threshold=1.5: expected in (0, 1)"),
    ("train.batch_size=0", "train.batch_size=0: expected >= 1"),
    ("train.optimizer='adagrad'", "train.optimizer='adagrad': expected one of 'sgd', 'adam'"),
    ("train.checkpoint_every=0", "train.checkpoint_every=0: expected >= 1"),
    ("data.source_size=(64,)", "data.source_size=(64,): expected (width, height)"),
    ("train.precision='fp16'", "train.precision='fp16': expected one of 'fp32', 'bf16'"),
])
def test_bad_values_are_refused_by_field_before_anything_runs(tmp_path, capsys, change,
                                                              message):
    assert main(["train", *SMOKE, "--stage", "uda_pixel", "--run-dir", str(tmp_path),
                 "--set", change]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # no benchmark generated, nothing trained


def test_bad_values_are_refused_when_the_config_is_built():
    with pytest.raises(ValueError, match=r"adapt.lambda_c=-1.0: expected >= 0"):
        override(preset("smoke"), **{"adapt.lambda_c": -1.0})


@pytest.mark.parametrize("change, message", [
    ("adapt.translated_source_dir='/nonexistent/translated'", "/nonexistent/translated"),
    ("model.backbone_weights='/nonexistent/resnet.pth'", "model.backbone_weights"),
])
@pytest.mark.slow
def test_the_whole_chain_is_checked_before_the_first_stage_trains(tmp_path, capsys, change,
                                                                  message):
    assert main(["train", *SMOKE, "--stage", "uda_pixel", "--run-dir", str(tmp_path),
                 "--set", change]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_an_unwritable_run_directory_is_refused_before_training(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["train", *SMOKE, "--run-dir", str(blocker / "runs")]) == 2
    err = capsys.readouterr().err
    assert f"run directory {blocker / 'runs'} cannot be written" in err
    with pytest.raises(runs.RunError, match="MiB free"):
        runs.check_writable(tmp_path, need_bytes=2**62)


def test_a_failed_save_keeps_the_trained_weights_at_a_named_fallback(tmp_path):
    def train(resume):
        resume.path.parent.mkdir(parents=True)
        resume.path.parent.rmdir()
        resume.path.parent.write_text("the run folder became a file")  # saving must fail
        return {"model": {"w": torch.arange(3.0)}}, {"miou": 1.0}

    with pytest.raises(runs.RunError, match="the trained run is saved at") as error:
        runs.load_or_train(tmp_path, "x", {"a": 1}, train)
    fallback = runs.fallback_path(runs.run_dir(tmp_path, "x", {"a": 1}))
    try:
        assert str(fallback) in str(error.value)
        saved = runs.load_checkpoint(fallback)
        assert torch.equal(saved["model"]["w"], torch.arange(3.0))
        assert saved["metrics"] == {"miou": 1.0}
    finally:
        fallback.unlink(missing_ok=True)


class _TurnsNaN(torch.utils.data.Dataset):
    """The smoke source split, whose images become NaN after `after` items were read."""

    def __init__(self, split, after):
        self.split, self.after, self.read = split, after, 0

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        item, self.read = self.split[i], self.read + 1
        if self.read > self.after:
            item["image"] = torch.full_like(item["image"], float("nan"))
        return item


def test_a_non_finite_loss_stops_training_and_keeps_the_last_checkpoint(smoke_bench, tmp_path):
    cfg = override(preset("smoke"), **{"train.checkpoint_every": 2})
    model = build_model(cfg, EMBEDDED)
    resume = runs.Resume(tmp_path / "resume.pt", cfg.train.checkpoint_every)
    bad = _TurnsNaN(smoke_bench["source_train"], after=4 * cfg.train.batch_size)
    with pytest.raises(FloatingPointError, match="source_only: the loss is not finite at "
                       "step 5 \\(term seg = nan\\).*resume.pt, is kept"):
        train_supervised(model, bad, smoke_bench["source_val"], cfg.train, 0, "cpu",
                         desc="source_only", progress=False, resume=resume)
    saved = runs.load_checkpoint(resume.path)
    assert saved["step"] == 4
    assert all(torch.isfinite(v).all() for v in saved["parts"]["model"].values()
               if v.is_floating_point())


def test_a_corrupt_metrics_file_names_the_folder_to_delete_and_deleting_it_works(tmp_path,
                                                                                capsys):
    args = ["train", *SMOKE, "--run-dir", str(tmp_path), "--set", "train.iterations=2"]
    assert main(args) == 0
    run = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run"]
    (tmp_path / run / "metrics.json").write_text("{ truncated")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"Delete the folder {run} to train it again" in err
    import shutil

    shutil.rmtree(run)
    assert main(args) == 0


def _weights():
    torch.manual_seed(0)
    return build_model(preset("smoke"), EMBEDDED).state_dict()


def test_checkpoints_of_other_tools_load_or_fail_by_name(tmp_path):
    cfg = preset("smoke")
    weights = _weights()
    for state in ({f"module.{k}": v for k, v in weights.items()},  # DataParallel, DDP
                  weights,                                          # a bare state_dict
                  {"state_dict": weights}):
        model = build_model(cfg, EMBEDDED)
        load_weights(model, state, tmp_path / "c.pt", cfg.model)
        assert all(torch.equal(model.state_dict()[k], weights[k]) for k in weights)
    with pytest.raises(ValueError, match=r"c.pt holds a dict with keys \['epoch', 'optim'\]"):
        load_weights(build_model(cfg, EMBEDDED), {"epoch": 3, "optim": {}}, "c.pt", cfg.model)


@pytest.mark.parametrize("change, message", [
    ({"model.base_width": 16}, "width of the first layer"),
    ({"model.aspp_rates": (1, 2)}, "ASPP branches"),
])
def test_a_bare_state_dict_that_does_not_fit_names_what_differs(change, message):
    other = override(preset("smoke"), **change)
    with pytest.raises(ValueError, match=f"c.pt does not fit the model.*{message}"):
        load_weights(build_model(other, EMBEDDED), _weights(), "c.pt", other.model)


def test_a_wsda_checkpoint_that_does_not_fit_names_the_config_fields(tmp_path):
    cfg = preset("smoke")
    state = {"model": _weights(), "model_config": {"backbone": "slim", "base_width": 8,
                                                   "aspp_rates": [1, 2, 3, 4],
                                                   "legacy_aspp": False}}
    other = override(cfg, **{"model.base_width": 16})
    with pytest.raises(ValueError, match="model.base_width: checkpoint 8, config 16"):
        load_weights(build_model(other, EMBEDDED), state, "c.pt", other.model)
    from wsda_lib.data.classes import protocol

    nineteen = protocol(19).class_set
    with pytest.raises(ValueError, match="number of classes: checkpoint 10, model 19"):
        load_weights(build_model(cfg, nineteen), state, "c.pt", cfg.model)


@pytest.mark.slow
def test_evaluate_uses_the_checkpoints_own_config_without_its_initial_weights(tmp_path, capsys,
                                                                              monkeypatch):
    init = tmp_path / "imagenet.pth"
    torch.manual_seed(1)
    torch.save(build_model(preset("smoke"), EMBEDDED).backbone.state_dict(), init)
    assert main(["train", *SMOKE, "--run-dir", str(tmp_path), "--set", "train.iterations=2",
                 "train.eval_batch_size=3", f"model.backbone_weights='{init}'"]) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    init.unlink()  # moved away: the checkpoint holds every weight
    import wsda_lib.stages.run

    sizes = []
    real = wsda_lib.stages.run.eval_loader
    monkeypatch.setattr(wsda_lib.stages.run, "eval_loader",
                        lambda ds, batch_size: sizes.append(batch_size) or real(ds, batch_size))
    checkpoint = f"{trained['run']}/checkpoint.pt"
    assert main(["evaluate", "--checkpoint", checkpoint, "--run-dir", str(tmp_path),
                 "--device", "cpu"]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["target_test"]["miou"] == trained["target_test"] and set(sizes) == {3}


def test_a_runs_key_includes_the_number_of_processes(monkeypatch):
    import wsda_lib.core.distributed

    single = run_config("source_only", preset("smoke"), 0)
    monkeypatch.setattr(wsda_lib.core.distributed, "world_size", lambda: 2)
    double = run_config("source_only", preset("smoke"), 0)
    assert double["world_size"] == 2 and runs.config_key(single) != runs.config_key(double)
    assert "world_size" not in single  # one process keeps the keys runs always had


def test_the_checkpoint_interval_does_not_change_a_runs_key():
    a = run_config("uda_weak", override(preset("smoke"), **{"train.checkpoint_every": 7}), 0)
    assert runs.config_key(a) == runs.config_key(run_config("uda_weak", preset("smoke"), 0))
    assert np.isfinite(preset("paper_gta5").train.checkpoint_every)


def test_a_full_disk_at_the_final_save_still_keeps_the_weights(tmp_path, monkeypatch):
    """torch.save reports a failed write (a full disk) as RuntimeError, not OSError."""
    real = runs.save_checkpoint

    def disk_full(path, state):
        if "wsda-unsaved" not in str(path):
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos")
        real(path, state)

    monkeypatch.setattr(runs, "save_checkpoint", disk_full)
    with pytest.raises(runs.RunError, match="the trained run is saved at"):
        runs.load_or_train(tmp_path, "y", {"b": 1},
                           lambda resume: ({"model": {"w": torch.ones(2)}}, {"miou": 2.0}))
    fallback = runs.fallback_path(runs.run_dir(tmp_path, "y", {"b": 1}))
    try:
        assert torch.equal(runs.load_checkpoint(fallback)["model"]["w"], torch.ones(2))
    finally:
        fallback.unlink(missing_ok=True)


def test_a_resume_checkpoint_that_cannot_be_written_warns_and_training_goes_on(smoke_bench,
                                                                                tmp_path):
    cfg = override(preset("smoke"), **{"train.checkpoint_every": 10})
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    resume = runs.Resume(blocked / "resume.pt", cfg.train.checkpoint_every)
    with pytest.warns(UserWarning, match="resume checkpoint of step (10|20) could not be written"):
        history = train_supervised(build_model(cfg, EMBEDDED), smoke_bench["source_train"],
                                   smoke_bench["source_val"], cfg.train, 0, "cpu",
                                   desc="source_only", progress=False, resume=resume)
    assert history["iteration"][-1] == cfg.train.iterations


def test_a_resume_checkpoint_left_beside_a_finished_run_is_removed(tmp_path):
    def train(resume):
        return {"w": torch.ones(1)}, {}

    first = runs.load_or_train(tmp_path, "z", {"c": 1}, train)
    (first.dir / "resume.pt").write_bytes(b"left by a kill after config.json")
    assert runs.load_or_train(tmp_path, "z", {"c": 1}, train).loaded
    assert not (first.dir / "resume.pt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_schedulers_sigterm_saves_the_step_under_way_and_the_run_resumes_to_the_same_weights(
        tmp_path, signum):
    """SLURM sends SIGTERM before SIGKILL. The run ends the step under way, writes a resume
    checkpoint of it (not only the last periodic one), says so in one line and exits
    non-zero; the same command then finishes with the weights of an uninterrupted run.
    Checkpoints are due every 25 steps here, so a stop at another step is the signal's."""
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"

    def command(run_dir):
        return [c.replace("checkpoint_every=5", "checkpoint_every=25")
                for c in _train(run_dir, "source_only")]

    _finish(command(whole))
    proc = subprocess.Popen(command(stopped), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    while not list(stopped.glob("models/source_only-*/resume.pt")) and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(random.uniform(0.05, 0.3))
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    [resume] = stopped.glob("models/source_only-*/resume.pt")
    step = runs.load_checkpoint(resume)["step"]
    name = signal.Signals(signum).name
    assert f"source_only: stopped by {name} after step {step} of 60; the resume checkpoint " \
        f"{resume} holds it" in err
    assert "Traceback" not in err and 25 <= step < 60
    assert not (resume.parent / "config.json").exists()
    _finish(command(stopped))
    _same_run(whole, stopped, "source_only")
