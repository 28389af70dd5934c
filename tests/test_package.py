"""The package outside its checkout: a wheel built from the repository, installed into a fresh
virtual environment (not editable), runs the documented commands from an empty folder; and the
GPU check's module pulls in neither the notebook runner nor the bench."""

import json
import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(args, cwd, env=None, timeout=600):
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A venv holding the wsda wheel alone; its dependencies are read from this interpreter's
    site-packages through a .pth line (which adds the folder, and does not run the editable
    install's finder there), so nothing is downloaded."""
    tmp = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
          "-w", str(tmp / "dist"), "-q"], cwd=tmp)
    [wheel] = (tmp / "dist").glob("wsda-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp)
    python = venv / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                         "['purelib'])"], cwd=tmp).strip())
    (purelib / "dependencies.pth").write_text(
        "\n".join(site.getsitepackages() + [sysconfig.get_paths()["purelib"]]) + "\n")
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
         cwd=tmp)
    return venv


@pytest.mark.slow
def test_the_wheel_runs_from_an_empty_folder(installed, tmp_path):
    """`wsda train` and `wsda data check` from a folder with nothing in it: the installed
    package (not the checkout) is imported, and it needs no file of the repository."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    wsda = str(installed / "bin" / "wsda")
    where = _run([str(installed / "bin" / "python"), "-c",
                  "import wsda_lib; print(wsda_lib.__file__)"], cwd=tmp_path, env=env)
    assert Path(where.strip()).is_relative_to(installed) and REPO.as_posix() not in where
    out = _run([wsda, "train", "--preset", "smoke", "--stage", "uda_weak", "--device", "cpu"],
               cwd=tmp_path, env=env)
    result = json.loads(out.strip().splitlines()[-1])
    assert 0 <= result["target_test"] <= 100 and not result["loaded"]
    # the run beside the user (runs/ in the current folder), not beside the package
    assert result["run"].startswith("runs/models/uda_weak-")
    assert (tmp_path / result["run"] / "checkpoint.pt").is_file()
    _run([wsda, "data", "export-embedded", "domains", "--preset", "smoke"], cwd=tmp_path,
         env=env)
    report = _run([wsda, "data", "check", "--dataset", "folders", "--root", "domains/target"],
                  cwd=tmp_path, env=env)
    assert "domains/target" in report


def test_the_gpu_check_imports_neither_papermill_nor_the_bench():
    code = ("import sys, wsda_lib.experiments.gpu_check; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('papermill', "
            "'nbclient', 'nbconvert') or m == 'wsda_lib.experiments.bench' or "
            "m == 'wsda_lib.experiments.reproduce'))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=REPO).stdout.strip()
    assert loaded == "[]"


def test_a_package_inside_another_repository_records_no_commit(tmp_path, monkeypatch):
    """The commit a record names is the checkout's whose root holds the package; a package
    installed somewhere inside another git repository (a venv in a project) names none."""
    from wsda_lib.core import provenance

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=x", "-c", "user.email=x@x",
                    "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    installed = tmp_path / "venv" / "lib" / "site-packages" / "wsda_lib"
    installed.mkdir(parents=True)
    monkeypatch.setattr(provenance, "PACKAGE", installed)
    assert provenance.commit() is None and provenance.commit(short=True) is None
    monkeypatch.setattr(provenance, "PACKAGE", REPO / "wsda_lib")   # this checkout: its own
    assert provenance.commit(short=True) == subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
        text=True).stdout.strip()


def test_only_the_series_runner_needs_a_checkout(tmp_path, monkeypatch):
    """reproduce() finds the notebooks, build/ and runs/ in the checkout (the current folder);
    from another folder it says so by name, unless the caller gives them all."""
    from wsda_lib.experiments.reproduce import checkout, reproduce

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=f"{tmp_path} is not a wsda checkout"):
        reproduce("smoke")
    assert checkout(REPO) == REPO
    with pytest.raises(ValueError, match="the paper presets need the real datasets"):
        reproduce("paper_gta5", out=tmp_path / "out", run_dir=tmp_path / "runs",
                  notebooks=[REPO / "notebooks" / "01_source_only.ipynb"])
