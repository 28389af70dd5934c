"""Run the notebook series headless with papermill and collect its figures.

Each notebook runs on a `python3` kernel built from this interpreter (the venv's own, whatever
other kernel specs are installed) with cwd = notebooks/, gets the parameters PRESET, SEED,
SEEDS, DEVICE, RUN_DIR, FIGURES_DIR and INTERACTIVE=False, all paths absolute, and is written
executed to <out>/notebooks/, with an HTML copy beside it. Cells have no time limit unless
one is asked for. The series stops at the first failure with one line naming the notebook,
the cell and the executed copy, and saying that the trained stages are cached. One progress
line per notebook reports its wall time; inside a notebook, each stage that trains logs a
line when it starts and when it ends (session.Session.stage). Notebook 06 writes
figures/results.json and figures/results.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import nbformat
import papermill as pm
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbconvert import HTMLExporter

from wsda_lib.core.provenance import commit
from wsda_lib.teaching.session import PROGRESS_LOG, PYTHON_PREFIX, SERIES_PRESETS

EXECUTED = "executed"  # notebooks/executed/: the reader's copies (reader_copy), committed
SERIES = re.compile(r"^(0[0-6]|A)_.*\.ipynb$")  # 00-06 and appendix A; 07 (real datasets) is not


class NotebookFailed(RuntimeError):
    """A notebook of the series could not run to its end; the message is one line naming
    the notebook, the cell and the executed copy."""


# What the kernel needs whatever the caller's environment holds: figures drawn inline (an
# exported MPLBACKEND=Agg, common on headless servers and in CI images, would leave every
# figure of the executed notebooks as its text repr).
KERNEL_ENV = {"MPLBACKEND": "module://matplotlib_inline.backend_inline"}


def unrendered_figures(notebook) -> list[int]:
    """The code cells (0-based, counting every cell) of an executed notebook that displayed a
    matplotlib figure as text only ("<Figure size ...>") and no image: a figure the
    environment left undrawn."""
    bad = []
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        data = [o.get("data", {}) for o in cell.get("outputs", [])]
        if any("<Figure size" in str(d.get("text/plain", "")) and "image/png" not in d
               for d in data):  # an output that is a figure's text repr and no image
            bad.append(i)
    return bad


# The parameters every notebook of the series declares; 06_results also declares SEEDS.
SERIES_PARAMETERS = ("PRESET", "SEED", "DEVICE", "RUN_DIR", "FIGURES_DIR", "INTERACTIVE")


def checkout(root: Path | str | None = None) -> Path:
    """The wsda checkout the series runs from, resolved: `root`, else the current directory.
    The notebooks and the committed records are not part of the installed package, so this is
    the one place that needs a checkout; it must hold notebooks/ (ValueError otherwise)."""
    root = Path(root or Path.cwd()).resolve()
    if not (root / "notebooks").is_dir():
        raise ValueError(f"{root} is not a wsda checkout (it has no notebooks/ folder); run "
                         f"the series from the repository's root, as `make reproduce` does")
    return root


def series(notebook_dir: Path | None = None) -> list[Path]:
    """The notebooks of the default series in `notebook_dir` (default: the checkout's
    notebooks/), in order."""
    notebook_dir = notebook_dir or checkout() / "notebooks"
    return sorted(p for p in notebook_dir.glob("*.ipynb") if SERIES.match(p.name))


# Seconds a running cell's kernel may sit idle (no CPU time used by it or its children, no
# output written) before the watchdog stops the notebook: a wait with no bound and no word,
# such as a widget comm no frontend will ever answer. A training cell is never idle.
IDLE_LIMIT = 600


class Watchdog:
    """A thread that stops a notebook whose kernel is idle: every `poll` seconds it sums the
    CPU time of this process's children (the kernel and what it started) and notes the
    executed copy's size and time; when neither has moved for `limit` seconds it kills the
    children, so that papermill returns, and `fired` says why."""

    def __init__(self, output: Path, limit: float = IDLE_LIMIT, poll: float = 1.0):
        import psutil

        self.output, self.limit, self.poll, self.fired = output, limit, poll, None
        self.me, self.done = psutil.Process(), threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _activity(self) -> tuple:
        cpu = 0.0
        for child in self.me.children(recursive=True):
            try:
                t = child.cpu_times()
                cpu += t.user + t.system
            except Exception:  # noqa: BLE001 - a child that just ended
                continue
        stat = self.output.stat() if self.output.is_file() else None
        return cpu, stat and (stat.st_size, stat.st_mtime_ns)

    def _watch(self) -> None:
        # An idle kernel still spends a few milliseconds a second (its heartbeat, zmq): a poll
        # counts as work when the kernel used at least a tenth of it, or the executed copy
        # changed.
        (cpu, written), since = self._activity(), time.monotonic()
        while not self.done.wait(self.poll):
            now_cpu, now_written = self._activity()
            busy = now_cpu - cpu >= 0.1 * self.poll or now_written != written
            cpu, written = now_cpu, now_written
            if busy:
                since = time.monotonic()
            elif time.monotonic() - since >= self.limit:
                self.fired = time.monotonic() - since
                for child in self.me.children(recursive=True):
                    with contextlib.suppress(Exception):
                        child.kill()
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()


def run_notebook(path: Path, output: Path, parameters: dict, cell_timeout: int | None = None,
                 kernel: str = "python3", required: tuple = (),
                 idle_limit: float | None = IDLE_LIMIT) -> float:
    """Execute one notebook with papermill on this interpreter's kernel; returns its wall
    time in seconds.

    Paths (the notebook, the executed copy, and parameter values that are Paths) are made
    absolute first; the kernel's cwd is the notebook's folder. cell_timeout: seconds per
    cell, None (the default) for no limit. The notebook must have a cell tagged
    `parameters` declaring every name in `required`; only the parameters it declares are
    passed. idle_limit: seconds the kernel may sit idle with nothing written while a cell
    runs (Watchdog; None: no watchdog). Raises NotebookFailed, with one line naming the
    notebook, the cell and the executed copy, for every way a run can fail: an exception in
    a cell, a cell timeout, a kernel that dies (out of memory) or cannot start, a kernel
    idle past idle_limit, a missing parameters cell."""
    path, output = Path(path).resolve(), Path(output).resolve()
    declared = _declared(path, required)
    parameters = {k: str(Path(v).resolve()) if isinstance(v, Path) else v
                  for k, v in parameters.items() if k in declared}
    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        # The kernel's own log says only that it runs over TCP on this machine, once per
        # notebook; at ERROR level the instructor's log keeps what the notebooks report.
        watchdog = Watchdog(output, idle_limit) if idle_limit else contextlib.nullcontext()
        with _progress(output.with_suffix(".log")), _own_kernel(kernel), \
                _stderr_to(output.with_suffix(".stderr.txt")), watchdog:
            pm.execute_notebook(str(path), str(output), parameters=parameters,
                                kernel_name=kernel, cwd=str(path.parent),
                                execution_timeout=cell_timeout,
                                progress_bar=False, log_output=False,
                                extra_arguments=["--IPKernelApp.log_level=ERROR"])
    except Exception as e:  # noqa: BLE001 - every failure becomes the one-line message
        if getattr(watchdog, "fired", None):
            raise NotebookFailed(f"{path.name}: {_running_cell(output)} waited with an idle "
                                 f"kernel and nothing written for {watchdog.fired:.0f} s, so "
                                 f"the watchdog stopped it (a wait nothing will end, such as "
                                 f"an interactive widget with no browser: run headless with "
                                 f"INTERACTIVE=False); executed copy: {output}") from None
        raise NotebookFailed(_failure(path, output, e, cell_timeout)) from None
    finally:
        _drop_if_empty(output.with_suffix(".stderr.txt"))
    seconds = time.perf_counter() - start
    write_html(output)
    return seconds


@contextmanager
def _stderr_to(path: Path):
    """Everything written to this process's stderr while a notebook runs, the kernel's own
    included (it inherits the file descriptor), goes to `path`: a dying or interrupted kernel
    prints tracebacks and papermill logs its errors there, and the instructor's log keeps the
    one-line error instead. The notebook's own output is in the executed copy."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "wb") as f:
            os.dup2(f.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _drop_if_empty(path: Path) -> None:
    if path.is_file() and path.stat().st_size == 0:
        path.unlink()


def _declared(path: Path, required: tuple) -> dict:
    """The parameters the notebook's `parameters` cell declares; refused without that cell
    or without one of `required` (papermill would otherwise run the notebook's defaults)."""
    declared = pm.inspect_notebook(str(path))
    if not declared:
        names = ", ".join(required) or "them"
        raise NotebookFailed(f"{path.name}: no cell is tagged 'parameters', so no parameter "
                             f"could be passed; tag the cell that sets {names}")
    missing = [k for k in required if k not in declared]
    if missing:
        raise NotebookFailed(f"{path.name}: its parameters cell does not set {missing}; "
                             f"expected {list(required)}")
    return declared


def _failure(path: Path, output: Path, error: Exception, cell_timeout) -> str:
    """One line for a failed notebook run: what failed, in which cell, and where the
    executed copy is."""
    if isinstance(error, pm.PapermillExecutionError):
        what = f"cell {error.cell_index} (execution count {error.exec_count}) raised " \
               f"{error.ename}: {error.evalue}"
    elif isinstance(error, CellTimeoutError):
        what = f"{_running_cell(output)} ran past the cell timeout of {cell_timeout} s"
    elif isinstance(error, DeadKernelError):
        what = f"the kernel died in {_running_cell(output)} (out of memory, or killed)"
    elif not output.is_file() or _running_cell(output) == "no cell":
        what = f"the kernel could not start ({type(error).__name__}: {error})"
    else:
        what = f"{_running_cell(output)} failed: {type(error).__name__}: {error}"
    detail = " ".join(what.split())  # one line, whatever the error's text holds
    stderr = output.with_suffix(".stderr.txt")
    extra = (f"; the kernel's stderr: {stderr}" if stderr.is_file() and stderr.stat().st_size
             else "")
    return f"{path.name}: {detail}; executed copy: {output}{extra}"


def _running_cell(output: Path) -> str:
    """The last cell the executed copy says was started, as 'cell N (execution count K)'."""
    try:
        nb = nbformat.read(output, as_version=4)
    except (OSError, ValueError):
        return "no cell"
    started = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"
               and c.get("metadata", {}).get("papermill", {}).get("start_time")]
    if not started:
        return "no cell"
    i, cell = started[-1]
    return f"cell {i} (execution count {cell.get('execution_count')})"


@contextmanager
def _own_kernel(name: str):
    """Kernel `name` is this interpreter: a kernel spec built from sys.executable, first on
    JUPYTER_PATH while the notebook runs, so that no other `python3` spec (a user's, or one
    on JUPYTER_PATH) can run the series on another environment; the kernel also checks its
    own interpreter (session.start, PYTHON_PREFIX). Its environment sets KERNEL_ENV over
    the caller's."""
    with tempfile.TemporaryDirectory(prefix="wsda-kernel-") as tmp:
        spec = Path(tmp) / "kernels" / name
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-Xfrozen_modules=off", "-m", "ipykernel_launcher",
                     "-f", "{connection_file}"],
            "display_name": "Python 3 (wsda)", "language": "python",
            "env": KERNEL_ENV}), encoding="utf-8")
        saved = {k: os.environ.get(k) for k in ("JUPYTER_PATH", PYTHON_PREFIX)}
        os.environ["JUPYTER_PATH"] = os.pathsep.join(
            [tmp] + ([saved["JUPYTER_PATH"]] if saved["JUPYTER_PATH"] else []))
        os.environ[PYTHON_PREFIX] = str(Path(sys.prefix).resolve())
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


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


def reader_copy(executed: Path, dest: Path, params: dict) -> Path:
    """The executed notebook as readers see it in the repository (notebooks/executed/, written
    by `make reproduce` of the default preset only): its outputs as they ran, the parameters
    papermill injected shown with paths relative to notebooks/ rather than this machine's,
    papermill's per-cell timings dropped, and metadata["wsda"] = the commit, preset and
    seeds it ran from (provenance.run_metadata's commit, as figures/results.json records).
    Raises NotebookFailed, and writes nothing, when a cell shows a figure as text only
    (`unrendered_figures`)."""
    nb = nbformat.read(executed, as_version=4)
    undrawn = unrendered_figures(nb)
    if undrawn:
        raise NotebookFailed(f"{executed}: cell(s) {undrawn} show a figure as text only, no "
                             f"image (MPLBACKEND={os.environ.get('MPLBACKEND')!r} here); the "
                             f"readers' copy {dest} is kept as it was")
    relative = {"RUN_DIR": "../runs", "FIGURES_DIR": "../figures"}
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if "injected-parameters" in cell.metadata.get("tags", []):
            given = [k for k in params if re.search(rf"^{k} = ", cell.source, re.M)]
            cell.source = "# Parameters, as make reproduce passed them\n" + "\n".join(
                f"{k} = {relative.get(k, params[k])!r}" for k in given)
    nb.metadata.pop("papermill", None)
    nb.metadata["wsda"] = {"commit": commit(short=True) or "unknown", "preset": params["PRESET"],
                           "seeds": params["SEEDS"], "seed": params["SEED"]}
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest)
    return dest


def write_html(notebook: Path) -> Path:
    """An HTML copy of an executed notebook, beside it."""
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    path = notebook.with_suffix(".html")
    path.write_text(body, encoding="utf-8")
    return path


# The series whose figures, results.json and readers' copies are committed: `make reproduce`.
COMMITTED = {"preset": "default", "seed": 0, "seeds": 3}


def destinations(repo: Path | None, preset: str, seed: int, seeds: int, out=None, figures=None
                 ) -> tuple[Path, Path, bool]:
    """Where a series run writes: (out, figures, committed). Only the committed series
    (COMMITTED, run into the checkout's build/) rewrites figures/ and the readers' copies; a
    quicker or other run (`make reproduce SEEDS=1`, another seed or preset) goes to
    build/<preset>[-seed<S>-<N>seeds]/ with its figures inside, and leaves every record alone."""
    asked = {"preset": preset, "seed": seed, "seeds": seeds}
    name = preset if preset != "default" or asked == COMMITTED else \
        f"{preset}-seed{seed}-{seeds}seeds"
    out = Path(out or (repo / "build" if asked == COMMITTED else repo / "build" / name))
    out = out.resolve()
    committed = repo is not None and asked == COMMITTED and out == (repo / "build").resolve()
    figures = Path(figures or (repo / "figures" if committed else out / "figures" / preset))
    return out, figures, committed


def reproduce(preset: str = "default", seed: int = 0, seeds: int = 3, out: Path | None = None,
              figures: Path | None = None, run_dir: Path | None = None, device: str = "auto",
              notebooks: list[Path] | None = None, cell_timeout: int | None = None,
              idle_limit: float | None = IDLE_LIMIT, repo: Path | None = None) -> dict:
    """Run the series of the checkout `repo` (`checkout`: by default the current directory);
    returns {notebook name: seconds}.

    Relative paths (out, figures, run_dir) are taken from the current directory and made
    absolute before anything reaches papermill or a kernel. cell_timeout: seconds per cell,
    None (the default) for no limit: a cell that trains grows with seeds and stages, and the
    machine's speed, so no fixed limit fits it. idle_limit: the watchdog's seconds of an idle
    kernel with nothing written (run_notebook; None: none). Raises NotebookFailed (one line)
    at the first notebook that fails; the stages trained so far stay cached in run_dir, so
    the same command again resumes from them."""
    # The checkout is needed for what is not given (the notebooks, out, run_dir) and for
    # the committed figures; a caller that gives them all runs from any folder.
    if repo is not None or not (notebooks and out and run_dir):
        repo = checkout(repo)
    out, figures, committed = destinations(repo, preset, seed, seeds, out, figures)
    run_dir = Path(run_dir or repo / "runs").resolve()
    params = {"PRESET": preset, "SEED": seed, "SEEDS": seeds, "DEVICE": device,
              "RUN_DIR": str(run_dir), "FIGURES_DIR": str(figures.resolve()),
              "INTERACTIVE": False}
    if preset not in SERIES_PRESETS:
        raise ValueError(f"preset {preset!r}: the series runs {list(SERIES_PRESETS)}; the "
                         f"paper presets need the real datasets (notebook 07, `wsda train`)")
    if cell_timeout is not None and (type(cell_timeout) is not int or cell_timeout < 1):
        raise ValueError(f"cell_timeout={cell_timeout!r}: expected None (no limit) or a whole "
                         f"number of seconds >= 1")
    timings = {}
    todo = notebooks or series(repo / "notebooks")
    if not todo:
        raise NotebookFailed(f"no notebooks of the series (00-06, A) in {repo / 'notebooks'}")
    for path in todo:  # every notebook's parameters cell, before the first one runs
        _declared(Path(path).resolve(), SERIES_PARAMETERS)
    for k, path in enumerate(todo, 1):
        print(f"[{k}/{len(todo)}] {path.name}: started; {len(todo) - k} notebook(s) after it",
              flush=True)
        try:
            seconds = run_notebook(path, out / "notebooks" / path.name, params, cell_timeout,
                                   idle_limit=idle_limit,
                                   required=SERIES_PARAMETERS)
        except NotebookFailed as e:
            raise NotebookFailed(f"{e}; stages trained so far are cached in {run_dir}, so the "
                                 f"same command again resumes from them") from None
        timings[path.name] = seconds
        if committed:  # the reader's copy, committed beside the sources
            reader_copy(out / "notebooks" / path.name,
                        repo / "notebooks" / EXECUTED / path.name, params)
        print(f"[{k}/{len(todo)}] {path.name}: done in {seconds:.0f} s", flush=True)
    print(f"done: {sum(timings.values()):.0f} s; executed notebooks in {out / 'notebooks'}, "
          f"figures in {figures}", flush=True)
    return timings
