"""Every command the README documents is run here exactly as written, from a temporary copy of
the repository (relative paths, cwd = the copy's root), or is listed in NOT_RUN with the
reason. `make smoke` once failed on a fresh checkout because only absolute paths were tested.

The copy shares this checkout's .venv (a symlink) and imports its own wsda_lib (PYTHONPATH),
so the commands run the code of the copy. Placeholders of the README (/data/GTA5, DIR,
<stage>-<key>) are replaced by tiny real-format trees and the run the commands before made.
The tests share the copy and run in file order, as a reader would type the commands: the
ones after `make smoke` load the runs it trained, and `make clean` comes last.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from real_trees import ClassFromRed, cityscapes_val_for_scoring

from wsda_lib.experiments.reproduce import series
from wsda_lib.records.export import export_cityscapes

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.notebook

# Commands the README documents that take minutes to hours, need what CI has not (the real
# datasets, a GPU, a display), or are this suite itself; what each is covered by.
NOT_RUN = {
    "make reproduce": "40 minutes; the same runner as `make smoke` (below), default preset",
    "make reproduce SEEDS=1": "15 minutes; the same runner as `make smoke`",
    ".venv/bin/wsda reproduce --preset default --seeds 3": "40 minutes; `make smoke` runs it "
    "in the smoke preset",
    "make test": "this suite",
    "make test-fast": "this suite without its `notebook` and `slow` tests",
    ".venv/bin/tensorboard --logdir runs/models": "starts a TensorBoard server for a person; "
    "tests/test_engine.py reads the events it would show",
    ".venv/bin/pip install -e '.[tensorboard]'": "`make test` installs the dev extra, which "
    "holds it",
    "make bench": "about 45 minutes; tests/test_bench.py runs its parts on tiny data",
    ".venv/bin/python -m wsda_lib.experiments.bench --quick --out DIR":
        "a few minutes; tests/test_bench.py",
    ".venv/bin/python -m wsda_lib.experiments.bench --trade RUN_DIR": "an hour of training",
    "make study": "an hour; tests/test_weak_label_study.py runs the study on tiny runs",
    "make mechanisms": "about an hour after the series' seed 0; tests/test_mechanisms.py "
    "runs its record in the smoke preset",
    "make calibrate": "about an hour; `wsda calibrate --preset smoke` (below) runs its code",
    "make ablation": "about 45 minutes after the series; `wsda ablation --preset smoke` (below)",
    "make lab": "starts a JupyterLab server for a person",
    "make gpu-check": "needs a GPU; `wsda gpu-check --tiny` (below) runs its code path",
    "conda env create -f environment.yml": "conda is not on CI; tests/test_project.py checks "
    "environment.yml against pyproject.toml",
    ".venv/bin/pip install -e '.[paper]'": "`make test` installs the dev extra, which holds it",
    ".venv/bin/pip install -e '.[official]'": "`make test` installs the dev extra, which holds "
    "it",
    ".venv/bin/wsda train --preset paper_gta5 --stage source_only --source-root /data/GTA5 "
    "--target-root /data/cityscapes --set model.backbone_weights=/weights/resnet101-imagenet.pth":
    "paper scale: ImageNet weights and the real datasets; tests/test_real_points_self_training"
    ".py trains every stage on tiny real-format trees",
    ".venv/bin/wsda train --preset paper_gta5 --stage uda_pixel ... --set "
    "adapt.translated_source_dir=/data/GTA5_as_cityscapes": "paper scale, as above; "
    "tests/test_real_datasets.py covers translated source images",
    ".venv/bin/torchrun --nproc_per_node=4 -m wsda_lib.cli train --preset paper_gta5 --stage "
    "source_only ...": "paper scale; tests/test_cli.py runs torchrun with two processes",
}


def readme_commands(text: str) -> list[str]:
    """The commands the README documents: every line of its bash blocks (continuations
    joined, comments dropped) and every inline code span that starts like a command."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = " ".join(line.split("  #")[0].split())
            if line:
                found.append(line)
    for span in re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S)):
        span = " ".join(span.split())
        if re.match(r"(make |\.venv/bin/|python3? -m |torchrun |conda |pip )", span):
            found.append(span)
    return list(dict.fromkeys(found))


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    """The repository's tracked (and not ignored) files, copied with their times, and this
    checkout's .venv; PYTHONPATH makes the copy's wsda_lib the one imported."""
    stamp, project = REPO / ".venv/.installed", REPO / "pyproject.toml"
    if not stamp.is_file() or stamp.stat().st_mtime < project.stat().st_mtime:
        pytest.fail("the venv is older than pyproject.toml: run `make venv` first")
    root = tmp_path_factory.mktemp("repo")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in listed.splitlines():
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    (root / ".venv").symlink_to(REPO / ".venv")
    return root


def run(copy: Path, command: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(copy)}
    done = subprocess.run(command, shell=True, cwd=copy, capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_every_readme_command_is_run_here_or_says_why_not():
    documented = readme_commands((REPO / "README.md").read_text())
    run_here = set(RUN_HERE)
    unaccounted = [c for c in documented if c not in run_here and c not in NOT_RUN]
    assert not unaccounted, f"README commands neither run by a test nor in NOT_RUN: {unaccounted}"
    stale = [c for c in list(run_here) + list(NOT_RUN) if c not in documented]
    assert not stale, f"no longer in the README: {stale}"


def test_make_lint(copy):
    run(copy, "make lint")


@pytest.mark.notebook
def test_make_smoke(copy):
    """The whole series in the smoke preset, into build/smoke/ (relative), 3 seeds."""
    committed = {f.name: f.read_bytes() for f in (copy / "figures").iterdir()}
    done = run(copy, "make smoke")
    executed = copy / "build/smoke/notebooks"
    assert sorted(p.name for p in executed.glob("*.ipynb")) == [p.name for p in series()]
    assert len(series()) == 8  # 00-06 and appendix A
    results = json.loads((copy / "build/smoke/figures/smoke/results.json").read_text())
    assert results["seeds"] == [0, 1, 2]
    assert "stage source_only, seed 0: trained in" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert {f.name: f.read_bytes() for f in (copy / "figures").iterdir()} == committed


@pytest.mark.notebook
def test_make_reproduce_in_the_smoke_preset_with_one_seed(copy):
    done = run(copy, "make reproduce PRESET=smoke SEEDS=1")
    assert "trained in" not in done.stdout  # every stage is cached by `make smoke`
    results = json.loads((copy / "build/smoke/figures/smoke/results.json").read_text())
    assert results["seeds"] == [0]


@pytest.mark.notebook
def test_one_notebook_with_papermill(copy):
    run(copy, ".venv/bin/papermill notebooks/01_source_only.ipynb build/01.ipynb "
              "-p PRESET smoke -p INTERACTIVE False --cwd notebooks")
    text = (copy / "build/01.ipynb").read_text()
    assert '"output_type": "error"' not in text and "loaded from" in text


@pytest.mark.slow
def test_wsda_train_help(copy):
    done = run(copy, ".venv/bin/wsda train --help")
    assert "--stage" in done.stdout and "--set" in done.stdout


@pytest.mark.slow
def test_wsda_train_and_evaluate(copy):
    trained = run(copy, ".venv/bin/wsda train --preset smoke --stage uda_pixel")
    reported = json.loads(trained.stdout.strip().splitlines()[-1])
    folder = copy / reported["run"]  # seed 0's (`make smoke` trained seeds 1 and 2 too)
    assert folder.parent == copy / "runs/models" and folder.name.startswith("uda_pixel-")
    command = ".venv/bin/wsda evaluate --checkpoint runs/models/<stage>-<key>/checkpoint.pt"
    done = run(copy, command.replace("<stage>-<key>", folder.name))
    scores = json.loads(done.stdout.strip().splitlines()[-1])
    assert scores["target_test"]["miou"] == reported["target_test"]


@pytest.mark.slow
def test_wsda_data_check_on_a_tiny_gta5_tree(copy):
    from real_trees import palette_label, rgb

    for i in range(2):
        rgb(copy / f"data/GTA5/images/{i:05d}.png")
        palette_label(copy / f"data/GTA5/labels/{i:05d}.png", [7, 8, 26, 0])
    done = run(copy, ".venv/bin/wsda data check --dataset gta5 --root /data/GTA5"
               .replace("/data/GTA5", "data/GTA5"))
    assert "checked 2 image/label pairs: no problems" in done.stdout


@pytest.mark.slow
def test_wsda_official_eval(copy):
    cityscapes_val_for_scoring(copy / "data/cityscapes")
    from wsda_lib.data.cityscapes import cityscapes

    ds = cityscapes(copy / "data/cityscapes", "val", size=None)
    export_cityscapes(ClassFromRed(19), ds, copy / "build/predictions")
    command = ".venv/bin/wsda official-eval --gt /data/cityscapes --predictions DIR"
    done = run(copy, command.replace("/data/cityscapes", "data/cityscapes")
               .replace("DIR", "build/predictions"))
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0 < result["miou"] <= 100 and np.isfinite(result["miou"])


@pytest.mark.slow
def test_wsda_gpu_check_tiny(copy):
    run(copy, ".venv/bin/wsda gpu-check --tiny")
    record = json.loads((copy / "build/gpu-check-tiny.json").read_text())
    assert record["tiny"] is True and not (copy / "bench/gpu.json").exists()


@pytest.mark.slow
def test_wsda_calibrate_and_ablation_in_the_smoke_preset(copy):
    done = run(copy, ".venv/bin/wsda calibrate --preset smoke")
    record = json.loads((copy / "build/calibrate/smoke/benchmark_calibration.json").read_text())
    assert [v["variant"] for v in record["variants"]][0] == "v1" and "calibrate: v1: rho" in \
        done.stdout
    models = copy / "runs" / "models"
    before = {d.name for d in models.iterdir()} if models.exists() else set()
    done = run(copy, ".venv/bin/wsda ablation --preset smoke --seeds 3")
    from wsda_lib.stages.registry import controls

    record = json.loads((copy / "build/ablation/smoke/ablation.json").read_text())
    assert record["seeds"] == [0, 1, 2] and len(record["controls"]) == len(controls())
    assert all(r["verdict"] in ("helps", "hurts", "no clear difference") and r["n"] == 3
               for r in record["controls"]) and "ablation: written to" in done.stdout
    # the series' stages that `make smoke` trained (seeds 0-2) are read, not trained again:
    # every new run directory is a control's
    stage_of = lambda names: {n.rsplit("-", 1)[0] for n in names}  # noqa: E731
    new = stage_of({d.name for d in models.iterdir()} - before)
    assert not new & stage_of(before) & {"uda_weak", "uda_pixel", "uda_self_training"}, new


@pytest.mark.slow
def test_your_own_data_from_the_embedded_benchmark(copy):
    """The README's "Your own data" commands: export the smoke benchmark as folders, check
    the target folder and its CSVs, train WDA with points from them, score and export."""
    this = test_your_own_data_from_the_embedded_benchmark
    commands = [c for c, test in RUN_HERE.items() if test is this]
    exported, checked, trained, evaluated = (run(copy, c) for c in commands)
    assert "wrote 224 images to my_domains" in exported.stdout
    assert checked.stdout.count("no problems") == 3  # train, val, test
    assert "image_labels.csv: 64 images" in checked.stdout and "points.csv:" in checked.stdout
    report = json.loads(trained.stdout.strip().splitlines()[-1])
    assert report["run"].startswith("my_runs/models/wda_point-") and report["target_test"] > 0
    scores = json.loads(evaluated.stdout.strip().splitlines()[-2])
    assert scores["target_test"]["miou"] == report["target_test"]
    assert len(list((copy / "my_predictions").glob("*.png"))) == 32


def test_wsda_train_with_tensorboard_curves(copy):
    run(copy, ".venv/bin/wsda train --preset smoke --stage adaptsegnet --seed 7 --set "
              "train.tensorboard=True")
    [events] = (copy / "runs/models").glob("adaptsegnet-*/tensorboard/events.out.tfevents.*")
    assert events.stat().st_size > 0


def test_make_clean(copy):
    run(copy, "make clean")
    assert not (copy / "runs").exists() and not (copy / "build").exists()


RUN_HERE = {
    ".venv/bin/wsda data export-embedded my_domains --preset smoke":
    test_your_own_data_from_the_embedded_benchmark,
    ".venv/bin/wsda data check --dataset folders --root my_domains/target --image-labels "
    "my_domains/target/image_labels.csv --points my_domains/target/points.csv":
    test_your_own_data_from_the_embedded_benchmark,
    ".venv/bin/wsda train --preset smoke --stage wda_point --set data.dataset=folders "
    "data.image_labels=my_domains/target/image_labels.csv "
    "data.points=my_domains/target/points.csv "
    "--source-root my_domains/source --target-root my_domains/target --run-dir my_runs":
    test_your_own_data_from_the_embedded_benchmark,
    ".venv/bin/wsda evaluate --checkpoint my_runs/models/wda_point-*/checkpoint.pt --run-dir "
    "my_runs --export my_predictions": test_your_own_data_from_the_embedded_benchmark,
    "make lint": test_make_lint,
    "make smoke": test_make_smoke,
    "make reproduce PRESET=smoke SEEDS=1": test_make_reproduce_in_the_smoke_preset_with_one_seed,
    ".venv/bin/papermill notebooks/01_source_only.ipynb build/01.ipynb -p PRESET smoke "
    "-p INTERACTIVE False --cwd notebooks": test_one_notebook_with_papermill,
    ".venv/bin/wsda train --help": test_wsda_train_help,
    ".venv/bin/wsda train --preset smoke --stage adaptsegnet --seed 7 --set train.tensorboard=True":
        test_wsda_train_with_tensorboard_curves,
    ".venv/bin/wsda train --preset smoke --stage uda_pixel": test_wsda_train_and_evaluate,
    ".venv/bin/wsda evaluate --checkpoint runs/models/<stage>-<key>/checkpoint.pt":
        test_wsda_train_and_evaluate,
    ".venv/bin/wsda data check --dataset gta5 --root /data/GTA5":
        test_wsda_data_check_on_a_tiny_gta5_tree,
    ".venv/bin/wsda official-eval --gt /data/cityscapes --predictions DIR":
        test_wsda_official_eval,
    ".venv/bin/wsda gpu-check --tiny": test_wsda_gpu_check_tiny,
    ".venv/bin/wsda calibrate --preset smoke": test_wsda_calibrate_and_ablation_in_the_smoke_preset,
    ".venv/bin/wsda ablation --preset smoke --seeds 3":
        test_wsda_calibrate_and_ablation_in_the_smoke_preset,
    "make clean": test_make_clean,
}
