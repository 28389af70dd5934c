"""No rank waits in a collective while another rank does work whose length grows with the data
(issue 18, section 5): the cached data and self-training's pseudo labels are prepared under a
file lock (distributed.once), `wsda train` prepares its data before the process group forms,
and the group's timeout is WSDA_DIST_TIMEOUT seconds."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from wsda_lib.core import distributed  # not cli: the spawned ranks import this module
from wsda_lib.core.atomic import write_json

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slow_cache(folder: Path, seconds: float):
    """A cache that takes `seconds` to compute the first time: (value, whether computed)."""
    cache = folder / "cache.json"
    if cache.is_file():
        return json.loads(cache.read_text()), False
    time.sleep(seconds)
    with open(folder / "computed.log", "a") as log:  # one line per computation
        log.write(f"{os.getpid()}\n")
    write_json(cache, 42)
    return 42, True


def _rank_with_slow_cache(rank, world, port, folder, group_first):
    """Worker: with a 2 s process-group timeout, take the 4 s cache through distributed.once
    (after the group formed, as self-training does, or before, as `wsda train` does), then
    all_reduce; record what this rank saw."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world), WSDA_DIST_TIMEOUT="2")
    if group_first:
        distributed.init_from_env("cpu")
    clock = time.perf_counter()
    value, computed = distributed.once(folder / "cache.lock", lambda: _slow_cache(folder, 4))
    waited = time.perf_counter() - clock
    distributed.init_from_env("cpu")
    total = distributed.all_reduce_sum(torch.tensor([float(value)]))
    distributed.barrier()
    (folder / f"rank{rank}.json").write_text(json.dumps(
        {"value": value, "computed": computed, "waited": waited, "sum": float(total[0])}))
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("group_first", [True, False], ids=["group_formed", "before_group"])
def test_a_rank_waits_on_the_file_lock_not_in_a_collective_while_another_computes(
        tmp_path, group_first):
    import torch.multiprocessing as mp

    mp.spawn(_rank_with_slow_cache, args=(2, _free_port(), tmp_path, group_first), nprocs=2)
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [s["value"] for s in seen] == [42, 42] and [s["sum"] for s in seen] == [84, 84]
    assert sorted(s["computed"] for s in seen) == [False, True]  # written once, read once
    assert len((tmp_path / "computed.log").read_text().splitlines()) == 1
    if group_first:  # the reader sat idle in a formed group longer than its 2 s timeout
        assert next(s["waited"] for s in seen if not s["computed"]) > 2


def test_once_runs_the_work_in_a_single_process_and_skips_it_for_a_recorded_token(tmp_path):
    lock, calls = tmp_path / "deep" / "x.lock", []

    def work():
        calls.append("work")
        return "computed"

    assert distributed.once(lock, work) == "computed" and lock.is_file()
    assert distributed.once(lock, work, token="job-a", read=lambda: "read") == "computed"
    assert distributed.once(lock, work, token="job-a", read=lambda: "read") == "read"
    assert distributed.once(lock, work, token="job-b") == "computed"
    assert calls == ["work"] * 3


def test_once_releases_the_lock_when_the_work_fails(tmp_path):
    lock = tmp_path / "x.lock"

    def fail():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        distributed.once(lock, fail)
    # a second open file takes its own flock: it would block forever had the first stayed held
    assert distributed.once(lock, lambda: "again") == "again"


def test_job_token_names_the_job_and_is_none_in_a_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.job_token("data") is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_PORT", "29500")
    a, b = distributed.job_token("data"), distributed.job_token("other data")
    assert a == distributed.job_token("data") and a != b
    monkeypatch.setenv("MASTER_PORT", "29501")  # the next job
    assert distributed.job_token("data") != a


@pytest.mark.parametrize("value", ["ten", "0", "-5", "nan", "inf", "1e400"])
def test_a_bad_timeout_is_an_error_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("WSDA_DIST_TIMEOUT", value)
    with pytest.raises(ValueError, match="WSDA_DIST_TIMEOUT"):
        distributed.collective_timeout()
    monkeypatch.setenv("WORLD_SIZE", "2")  # and before any process group would form
    monkeypatch.setattr(torch.distributed, "init_process_group",
                        lambda *a, **k: pytest.fail("the group formed"))
    with pytest.raises(ValueError, match="WSDA_DIST_TIMEOUT"):
        distributed.init_from_env("cpu")


def test_the_process_group_gets_the_timeout(monkeypatch):
    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("WSDA_DIST_TIMEOUT", "2.5")
    monkeypatch.setattr(torch.distributed, "init_process_group",
                        lambda backend, **k: seen.update(backend=backend, **k))
    assert distributed.init_from_env("cpu") == "cpu"
    assert seen == {"backend": "gloo", "timeout": timedelta(seconds=2.5)}
    monkeypatch.delenv("WSDA_DIST_TIMEOUT")
    distributed.init_from_env("cpu")
    assert seen["timeout"] == timedelta(seconds=1800)


def test_train_refuses_a_bad_timeout_before_any_work(tmp_path, monkeypatch, capsys):
    from wsda_lib import cli

    monkeypatch.setenv("WSDA_DIST_TIMEOUT", "ten")
    code = cli.main(["train", "--preset", "smoke", "--run-dir", str(tmp_path), "--device",
                     "cpu", "--set", "train.iterations=1"])
    assert code == 2 and "WSDA_DIST_TIMEOUT='ten'" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


class _GroupForms(Exception):
    pass


def test_train_prepares_the_data_before_the_process_group_forms(tmp_path, monkeypatch):
    from wsda_lib import cli

    cached = []

    def init_from_env(*args, **kwargs):
        cached.append(sorted(p.name for p in (tmp_path / "data").rglob("*.npz")))
        raise _GroupForms

    monkeypatch.setattr(cli.distributed, "init_from_env", init_from_env)
    with pytest.raises(_GroupForms):
        cli.main(["train", "--preset", "smoke", "--run-dir", str(tmp_path), "--device", "cpu"])
    assert cached == [sorted(f"{s}.npz" for s in ("source_train", "source_val", "target_train",
                                                   "target_val", "target_test"))]


# A launcher in miniature of the issue: every process group gets a short default timeout (as
# NCCL's 10 minutes is short beside an 11-minute GTA5 pass), and each cached data split and the
# pseudo labels take longer than it to compute. Before the fix rank 1 died in barrier().
_SLOW_LAUNCH = """
    import sys, time
    from datetime import timedelta
    from pathlib import Path

    import torch.distributed as dist

    import wsda_lib.data.benchmark as benchmark
    import wsda_lib.stages.inputs as stages
    from wsda_lib.training.pseudo_labels import PSEUDO_LABEL_RECORD
    from wsda_lib.cli import main

    form = dist.init_process_group
    dist.init_process_group = lambda *a, **k: form(*a, **{"timeout": timedelta(seconds=4), **k})
    generate, write = benchmark.synthetic.generate_split, stages.write_pseudo_labels

    def slow_generate(*a, **k):
        time.sleep(1.5)  # five splits: 7.5 s
        return generate(*a, **k)

    def slow_write(model, split, adapt, device, folder, *a, **k):
        if not (Path(folder) / PSEUDO_LABEL_RECORD).is_file():
            time.sleep(6)
        return write(model, split, adapt, device, folder, *a, **k)

    benchmark.synthetic.generate_split, stages.write_pseudo_labels = slow_generate, slow_write
    sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_torchrun_survives_data_and_pseudo_labels_that_outlast_the_group_timeout(tmp_path):
    launch = tmp_path / "slow_launch.py"
    launch.write_text(textwrap.dedent(_SLOW_LAUNCH))
    run_dir = tmp_path / "runs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(launch), "train", "--preset", "smoke", "--stage", "uda_self_training",
           "--run-dir", str(run_dir), "--device", "cpu",
           "--set", "train.iterations=2", "adapt.iterations=2", "train.eval_every=2",
           "adapt.pseudo_threshold=0.01"]  # a 2-step model's pseudo-weak labels keep pixels
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WSDA_DIST_TIMEOUT": "4",
           "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((run_dir / "data").rglob("*.npz"))) == 5
    records = list((run_dir / "data").rglob("pseudo_labels/*/pseudo_labels.json"))
    assert len(records) == 1
    assert len(list(run_dir.rglob("uda_self_training-*/checkpoint.pt"))) == 1
    assert not list(run_dir.rglob("*.tmp"))
