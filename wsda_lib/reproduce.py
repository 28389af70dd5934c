"""Run the notebook series headless with papermill and collect its figures.

Each notebook runs on the venv's own `python3` kernel with cwd = notebooks/, gets the
parameters PRESET, SEED, SEEDS, DEVICE, RUN_DIR, FIGURES_DIR and INTERACTIVE=False, and is
written executed to <out>/notebooks/, with an HTML copy beside it. The series stops at the
first failure, naming the notebook and the cell. One progress line per notebook reports its
wall time; inside a notebook, each stage that trains logs a line when it starts and when it
ends (notebook.Session.stage). Notebook 05 writes figures/results.json and figures/results.md.
"""

from __future__ import annotations

import os
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import nbformat
import papermill as pm
from nbconvert import HTMLExporter

from .notebook import PROGRESS_LOG

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
SERIES = re.compile(r"^0[0-5]_.*\.ipynb$")  # 00-05; 06 (real datasets) is not in the series


class NotebookFailed(RuntimeError):
    pass


def series(notebook_dir: Path = NOTEBOOKS) -> list[Path]:
    """The notebooks of the default series, in order."""
    return sorted(p for p in notebook_dir.glob("*.ipynb") if SERIES.match(p.name))


def run_notebook(path: Path, output: Path, parameters: dict, cell_timeout: int = 1800,
                 kernel: str = "python3") -> float:
    """Execute one notebook with papermill; returns its wall time in seconds."""
    # The kernelspec installed into the venv wins over one in the user's home, so the kernel
    # is this environment's python whatever else is installed.
    os.environ.setdefault("JUPYTER_PREFER_ENV_PATH", "1")
    output.parent.mkdir(parents=True, exist_ok=True)
    declared = pm.inspect_notebook(str(path))  # pass only what the parameters cell declares
    parameters = {k: v for k, v in parameters.items() if k in declared}
    start = time.perf_counter()
    try:
        # The kernel's own log says only that it runs over TCP on this machine, once per
        # notebook; at ERROR level the instructor's log keeps what the notebooks report.
        with _progress(output.with_suffix(".log")):
            pm.execute_notebook(str(path), str(output), parameters=parameters,
                                kernel_name=kernel, cwd=str(path.parent),
                                execution_timeout=cell_timeout,
                                progress_bar=False, log_output=False,
                                extra_arguments=["--IPKernelApp.log_level=ERROR"])
    except pm.PapermillExecutionError as e:
        raise NotebookFailed(f"{path.name}: cell {e.cell_index} (execution count "
                             f"{e.exec_count}) raised {e.ename}: {e.evalue}\n"
                             f"executed copy with the traceback: {output}") from None
    seconds = time.perf_counter() - start
    write_html(output)
    return seconds


@contextmanager
def _progress(log: Path):
    """While a notebook runs, print the lines its session writes to `log` (the stages it
    starts and ends), as they come: the instructor's log, kept out of the notebook."""
    log.unlink(missing_ok=True)
    log.touch()
    done = threading.Event()

    def follow():
        with open(log, encoding="utf-8") as f:
            while True:
                line = f.readline()
                if line:
                    print(f"    {line}", end="", flush=True)
                elif done.is_set():
                    return
                else:
                    time.sleep(0.2)

    reader = threading.Thread(target=follow, daemon=True)
    previous = os.environ.get(PROGRESS_LOG)
    os.environ[PROGRESS_LOG] = str(log)
    reader.start()
    try:
        yield
    finally:
        done.set()
        reader.join()
        if previous is None:
            os.environ.pop(PROGRESS_LOG, None)
        else:
            os.environ[PROGRESS_LOG] = previous


def write_html(notebook: Path) -> Path:
    """An HTML copy of an executed notebook, beside it."""
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    path = notebook.with_suffix(".html")
    path.write_text(body, encoding="utf-8")
    return path


def reproduce(preset: str = "default", seed: int = 0, seeds: int = 3, out: Path | None = None,
              figures: Path | None = None, run_dir: Path | None = None, device: str = "auto",
              notebooks: list[Path] | None = None, cell_timeout: int = 1800) -> dict:
    """Run the series; returns {notebook name: seconds}."""
    # Only the default preset, run into the default folder, rewrites the committed figures;
    # another preset keeps its executed notebooks apart too.
    out = Path(out or (REPO / "build" if preset == "default" else REPO / "build" / preset))
    committed = preset == "default" and out == REPO / "build"
    figures = Path(figures or (REPO / "figures" if committed else out / "figures" / preset))
    run_dir = Path(run_dir or REPO / "runs")
    params = {"PRESET": preset, "SEED": seed, "SEEDS": seeds, "DEVICE": device,
              "RUN_DIR": str(run_dir.resolve()), "FIGURES_DIR": str(figures.resolve()),
              "INTERACTIVE": False}
    timings = {}
    todo = notebooks or series()
    if not todo:
        raise NotebookFailed(f"no notebooks matching 00-05 in {NOTEBOOKS}")
    for k, path in enumerate(todo, 1):
        print(f"[{k}/{len(todo)}] {path.name}: started; {len(todo) - k} notebook(s) after it",
              flush=True)
        seconds = run_notebook(path, out / "notebooks" / path.name, params, cell_timeout)
        timings[path.name] = seconds
        print(f"[{k}/{len(todo)}] {path.name}: done in {seconds:.0f} s", flush=True)
    print(f"done: {sum(timings.values()):.0f} s; executed notebooks in {out / 'notebooks'}, "
          f"figures in {figures}", flush=True)
    return timings
