"""What the headless runner hands papermill is unambiguous, and every way a notebook can fail
ends in the same one-line error naming the notebook, the cell and the executed copy.

Tiny notebooks stand in for the series here: each failure is made on purpose (a killed kernel,
a sleeping cell, an interpreter that cannot start a kernel), in seconds."""

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest

from wsda_lib.experiments.reproduce import (
    SERIES_PARAMETERS,
    NotebookFailed,
    reproduce,
    run_notebook,
)
from wsda_lib.teaching import session

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"

pytestmark = pytest.mark.notebook


def _notebook(path: Path, *cells: str, tagged: bool = True) -> Path:
    nb = nbformat.v4.new_notebook()
    tags = {"tags": ["parameters"]} if tagged else {}
    nb.cells = [nbformat.v4.new_code_cell("NAME = 'default'", metadata=tags)]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def _failure(*args, **kwargs) -> str:
    with pytest.raises(NotebookFailed) as failed:
        run_notebook(*args, **kwargs)
    message = str(failed.value)
    assert "\n" not in message
    return message


def test_relative_paths_are_made_absolute_before_the_kernel_sees_them(tmp_path, monkeypatch):
    """The instructor's progress log is written by the kernel, whose cwd is the notebook's
    folder: `--out build/smoke` once reached it as a relative path and failed there."""
    _notebook(tmp_path / "nb/log.ipynb",
              "import os\nopen(os.environ['WSDA_PROGRESS_LOG'], 'a').write('stage x: done\\n')")
    monkeypatch.chdir(tmp_path)
    run_notebook(Path("nb/log.ipynb"), Path("build/out/log.ipynb"), {"NAME": "x"})
    assert (tmp_path / "build/out/log.log").read_text() == "stage x: done\n"
    assert (tmp_path / "build/out/log.ipynb").is_file()


def test_a_notebook_without_a_parameters_cell_is_refused(tmp_path):
    path = _notebook(tmp_path / "untagged.ipynb", "print(NAME)", tagged=False)
    message = _failure(path, tmp_path / "out.ipynb", {"NAME": "smoke"}, required=("NAME",))
    assert "untagged.ipynb: no cell is tagged 'parameters'" in message
    assert not (tmp_path / "out.ipynb").exists()  # refused before running anything


def test_a_series_notebook_that_lost_its_parameters_tag_is_refused(tmp_path):
    """Without the tag, papermill passes nothing and the notebook ran PRESET='default' with
    rc 0; now the series stops before any work."""
    nb = nbformat.read(NOTEBOOKS / "01_source_only.ipynb", as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("tags", None)
    copy = tmp_path / "notebooks/01_source_only.ipynb"
    copy.parent.mkdir()
    nbformat.write(nb, copy)
    with pytest.raises(NotebookFailed, match="01_source_only.ipynb: no cell is tagged"):
        reproduce("smoke", out=tmp_path / "out", run_dir=tmp_path / "runs", device="cpu",
                  notebooks=[copy])
    assert not (tmp_path / "runs").exists()


def test_every_series_notebook_declares_the_series_parameters():
    import papermill as pm

    from wsda_lib.experiments.reproduce import series

    assert len(series()) == 8
    for path in series():
        declared = pm.inspect_notebook(str(path))
        assert set(SERIES_PARAMETERS) <= set(declared), path.name


def test_an_exception_in_a_cell_names_the_notebook_cell_and_copy(tmp_path):
    path = _notebook(tmp_path / "raises.ipynb", "x = 1", "raise ValueError('bad\\nvalue')")
    message = _failure(path, tmp_path / "out.ipynb", {})
    assert message.startswith("raises.ipynb: cell ")
    assert "raised ValueError: bad value" in message
    assert message.endswith(f"executed copy: {tmp_path / 'out.ipynb'}")


def test_a_dead_kernel_gives_the_one_line_error(tmp_path):
    """The kernel killed as the OOM killer would: it dies in the third cell (index 2)."""
    path = _notebook(tmp_path / "oom.ipynb", "x = 1",
                     "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "y = 2")
    message = _failure(path, tmp_path / "out.ipynb", {})
    assert message.startswith("oom.ipynb: the kernel died in cell 2")
    assert f"executed copy: {tmp_path / 'out.ipynb'}" in message


@pytest.mark.notebook
def test_a_cell_timeout_gives_the_one_line_error(tmp_path):
    path = _notebook(tmp_path / "slow.ipynb", "import time\ntime.sleep(60)")
    message = _failure(path, tmp_path / "out.ipynb", {}, cell_timeout=2)
    assert message.startswith("slow.ipynb: cell 1 (execution count")
    assert "ran past the cell timeout of 2 s" in message


def test_a_kernel_that_cannot_start_gives_the_one_line_error(tmp_path, monkeypatch):
    path = _notebook(tmp_path / "nokernel.ipynb", "x = 1")
    monkeypatch.setattr(sys, "executable", "/bin/false")  # the kernel spec's interpreter
    message = _failure(path, tmp_path / "out.ipynb", {})
    assert message.startswith("nokernel.ipynb: the kernel could not start")


def test_the_kernel_is_this_interpreter_whatever_is_on_jupyter_path(tmp_path, monkeypatch):
    """A `python3` kernel spec on JUPYTER_PATH (another environment's) used to win over the
    venv's own; the runner's spec, built from sys.executable, comes first."""
    other = tmp_path / "jupyter/kernels/python3"
    other.mkdir(parents=True)
    (other / "kernel.json").write_text(json.dumps({
        "argv": ["/bin/false", "-f", "{connection_file}"], "display_name": "other",
        "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    path = _notebook(tmp_path / "which.ipynb",
                     "import sys\nopen(NAME, 'w').write(sys.prefix)")
    run_notebook(path, tmp_path / "out.ipynb", {"NAME": str(tmp_path / "prefix.txt")})
    assert Path((tmp_path / "prefix.txt").read_text()).resolve() == Path(sys.prefix).resolve()
    assert os.environ["JUPYTER_PATH"] == str(tmp_path / "jupyter")  # restored


def test_a_kernel_of_another_environment_is_refused_by_name(monkeypatch):
    monkeypatch.setenv(session.PYTHON_PREFIX, "/opt/another-env")
    with pytest.raises(RuntimeError, match="not the interpreter that started the series"):
        session.check_interpreter()
    monkeypatch.setenv(session.PYTHON_PREFIX, str(Path(sys.prefix).resolve()))
    session.check_interpreter()


def test_cells_have_no_time_limit_unless_asked():
    """A training cell grows with the seeds, the stages and the machine: a fixed 1800 s limit
    failed `make reproduce` on a machine 20 % slower than the bench's."""
    import inspect

    from wsda_lib.cli import _parser

    assert _parser().parse_args(["reproduce"]).cell_timeout is None
    for function in (reproduce, run_notebook):
        assert inspect.signature(function).parameters["cell_timeout"].default is None


def test_a_failed_series_says_the_same_command_resumes(tmp_path):
    declares = "\n".join(f"{k} = None" for k in SERIES_PARAMETERS)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(declares, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("raise MemoryError('out of memory')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = tmp_path / "03_fails.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(NotebookFailed) as failed:
        reproduce("smoke", out=tmp_path / "out", run_dir=tmp_path / "runs", device="cpu",
                  notebooks=[path])
    message = str(failed.value)
    assert "\n" not in message and "raised MemoryError: out of memory" in message
    assert message.endswith(f"stages trained so far are cached in {tmp_path / 'runs'}, so the "
                            f"same command again resumes from them")


def test_the_series_refuses_a_preset_it_cannot_run_before_any_notebook(tmp_path):
    from wsda_lib.cli import main

    with pytest.raises(ValueError, match="preset 'paper_gta5': the series runs"):
        reproduce("paper_gta5", out=tmp_path / "out", run_dir=tmp_path / "runs")
    with pytest.raises(SystemExit):
        main(["reproduce", "--preset", "paper_gta5"])
    assert not (tmp_path / "out").exists()


def test_figures_are_drawn_whatever_mplbackend_the_caller_exports(tmp_path, monkeypatch):
    """MPLBACKEND=Agg, exported as on headless servers and CI images, used to leave every
    figure of the executed notebooks as its text repr; the kernel draws inline whatever the
    caller's environment holds."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    path = _notebook(tmp_path / "fig.ipynb", "import matplotlib.pyplot as plt\n"
                     "from IPython.display import display\n"
                     "fig, ax = plt.subplots()\nax.plot([1, 2])\ndisplay(fig)")
    run_notebook(path, tmp_path / "out.ipynb", {})
    nb = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert any("image/png" in o.get("data", {}) for o in nb.cells[-1].outputs)


def test_a_readers_copy_whose_figures_were_left_as_text_is_refused_and_kept(tmp_path):
    """An executed copy with a figure shown as text only ("<Figure size ...>", what an Agg
    backend leaves) never replaces the committed readers' copy, which keeps its bytes."""
    from wsda_lib.experiments.reproduce import reader_copy, unrendered_figures

    executed = _notebook(tmp_path / "run.ipynb", "fig")
    nb = nbformat.read(executed, as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output(
        "execute_result", data={"text/plain": "<Figure size 640x480 with 1 Axes>"},
        execution_count=1)]
    nbformat.write(nb, executed)
    assert unrendered_figures(nb) == [1]
    dest = tmp_path / "committed.ipynb"
    dest.write_text("committed bytes")
    with pytest.raises(NotebookFailed, match=r"run.ipynb: cell\(s\) \[1\] show a figure as "
                                             r"text only, no image"):
        reader_copy(executed, dest, {"PRESET": "default", "SEEDS": 3, "SEED": 0})
    assert dest.read_text() == "committed bytes"
    nb.cells[1].outputs[0]["data"]["image/png"] = "iVBORw0KGgo="
    assert unrendered_figures(nb) == []


@pytest.mark.notebook
def test_a_cell_that_waits_forever_on_an_idle_kernel_is_stopped_by_the_watchdog(tmp_path):
    """Cells have no time limit, so a cell waiting on something nothing will send (a widget
    comm with no browser) used to hang the series forever. With the kernel idle and nothing
    written for idle_limit seconds, the watchdog stops it with the one-line error naming the
    notebook and the cell; a cell that works (CPU) for longer than the limit is left alone."""
    path = _notebook(tmp_path / "waits.ipynb", "x = 1",
                     "import threading\nthreading.Event().wait()")
    with pytest.raises(NotebookFailed) as failed:
        run_notebook(path, tmp_path / "out.ipynb", {}, idle_limit=4)
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith("waits.ipynb: cell 2") and "waited with an idle kernel and " \
        "nothing written for" in message and "the watchdog stopped it" in message
    busy = _notebook(tmp_path / "busy.ipynb", "import time\nend = time.time() + 8\n"
                     "while time.time() < end:\n    pass")
    run_notebook(busy, tmp_path / "busy_out.ipynb", {}, idle_limit=4)
