"""The session a notebook opens from its parameters cell: one call gives it the config,
the device, the benchmark, `stage(name)`, `save(figure)` and a place for its summary.

    nb = session.start(globals())   # checks the parameters cell, loads the benchmark
    source_only = nb.stage("source_only")
    nb.save(plots.iou_bars(...), "01_per_class_iou")

Figures go to FIGURES_DIR when it is given (`make reproduce` passes the repository's
figures/ for the default preset) and to build/figures/<preset>/ otherwise, so a notebook run
by hand never overwrites the committed figures.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown, display

from wsda_lib.core.atomic import write_json
from wsda_lib.core.config import PRESETS, Config, preset
from wsda_lib.core.device import DEVICE_NAMES, resolve_device
from wsda_lib.core.provenance import run_metadata
from wsda_lib.data import Benchmark, load
from wsda_lib.method.weak_classification import Pooling, image_class_scores
from wsda_lib.records.results import adversarial_weights, attach_controls, stage_table, summarise
from wsda_lib.stages import STAGES, StageResult, run_stage, title
from wsda_lib.stages.registry import short_titles
from wsda_lib.teaching import plots
from wsda_lib.teaching.analysis import (
    attention_classes,
    attention_maps,
    attention_on_class,
    attention_share,
)

# A notebook runs with its own folder as the current directory (JupyterLab, and papermill as
# reproduce.py starts it): RUN_DIR and the committed records are found from there.
RECORDS_DIR = Path("..") / "figures"
PROGRESS_LOG = "WSDA_PROGRESS_LOG"  # set by reproduce.py: the file a headless run logs to
PYTHON_PREFIX = "WSDA_PYTHON_PREFIX"  # set by reproduce.py: the interpreter the kernel must be


@dataclass
class Session:
    preset: str
    seed: int
    cfg: Config
    device: object
    bench: Benchmark
    run_dir: Path
    figures_dir: Path
    interactive: bool
    records_dir: Path   # the committed records (figures/): study.json, mechanisms.json, ...

    @property
    def classes(self) -> tuple[str, ...]:
        return self.bench.class_set.names

    def stage(self, name: str, seed: int | None = None,
              with_target_statistics: bool = False) -> StageResult:
        """The cached run of stage `name` (trained first if needed) for `seed` (default
        SEED). Interactive: a progress bar. Under `make reproduce`: a line in the
        instructor's log when the stage starts and when it ends (PROGRESS_LOG).
        with_target_statistics: its metrics also hold its scores with BatchNorm statistics
        re-estimated on target train (stages.TARGET_STATISTICS; seconds, cached)."""
        seed = self.seed if seed is None else seed
        self._log(f"stage {name}, seed {seed}: loading or training")
        start = time.perf_counter()
        result = run_stage(name, self.cfg, self.bench, seed, self.device,
                           self.run_dir / "models", progress=self.interactive,
                           with_target_statistics=with_target_statistics)
        how = "loaded" if result.run.loaded else "trained"
        self._log(f"stage {name}, seed {seed}: {how} in {time.perf_counter() - start:.0f} s, "
                  f"target val mIoU {result.metrics['target_val']['miou']:.1f}")
        return result

    def _log(self, line: str) -> None:
        path = os.environ.get(PROGRESS_LOG)
        if path:  # reproduce.py prints this file's lines as they come; the notebook stays clean
            with open(path, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    def stages(self, names, seed: int | None = None) -> dict[str, StageResult]:
        return {name: self.stage(name, seed) for name in names}

    def titles(self, names) -> dict[str, str]:
        return {name: title(name, self.cfg) for name in names}

    def colours(self) -> dict[str, tuple]:
        """One colour per stage title, the same in every figure of the series (tab20, in
        the order of stages.STAGES)."""
        palette = plt.get_cmap("tab20").colors
        return {title(name, self.cfg): palette[i % len(palette)]
                for i, name in enumerate(STAGES)}

    def table(self, runs: dict) -> pd.DataFrame:
        """mIoU and gap closed (%) on target val and target test, one row per stage, in
        the series' order. Gap closed = (stage - source-only) / (oracle - source-only)."""
        runs = {name: runs[name] for name in STAGES if name in runs}
        titles = self.titles(runs)
        tables = {s.replace("_", " "): stage_table(runs, titles, s).set_axis(
                      ["mIoU (%)", "gap closed (%)"], axis=1)
                  for s in ("target_val", "target_test")}
        return pd.concat(tables, axis=1)

    def summarise(self, per_seed: dict) -> dict:
        """results.json's content from per_seed[stage][seed] = metrics (results.summarise),
        with this run's preset, commit, date and machine, and the controls of
        figures_dir/ablation.json when they were measured for the same preset and seeds, and
        the adversarial weights this preset trains with beside what the committed mechanisms
        record chose for the same preset (results.adversarial_weights)."""
        results = summarise(per_seed, self.titles(per_seed), self.classes,
                            run_metadata(self.preset, str(self.device)))
        controls = self.figures_dir / "ablation.json"
        if controls.exists():
            results = attach_controls(results, json.loads(controls.read_text(encoding="utf-8")))
        mechanisms = self.records_dir / "mechanisms.json"
        record = (json.loads(mechanisms.read_text(encoding="utf-8")) if mechanisms.is_file()
                  else {})
        if record.get("preset") == self.preset:  # the record measured this preset's weights
            results["weights"] = adversarial_weights(record, self.cfg)
        return results

    ATTENTION_IMAGES = (0, 1, 2)  # the target val images every notebook shows attention on

    def attention(self, runs: dict, shown: str, figure: str) -> pd.DataFrame:
        """Attention at this step of the series: the attention grid of stage `shown` on the
        same three target val images in every notebook, the same classes for each (its
        largest and smallest present class and the absent class the source-only model
        scores highest: analysis.attention_classes) on one colour scale, with the present
        classes' outlines (saved as `figure`); and a table per class of each stage's target
        val IoU and share of attention on the class's own pixels (analysis.attention_share),
        beside the class's area: the attention picks the right region when its share is
        well above the area."""
        split = self.bench["target_val"]
        items = [split[i] for i in self.ATTENTION_IMAGES]
        images = torch.stack([it["image"] for it in items])
        labels = torch.stack([torch.as_tensor(it["label"]) for it in items])
        with torch.no_grad():
            scores = image_class_scores(self.stage("source_only").model.eval()(
                images.to(self.device))[0], Pooling()).cpu()
        chosen = [attention_classes(it["label"], it["weak_label"], s)
                  for it, s in zip(items, scores, strict=True)]
        absent = [{c for c in range(len(self.classes)) if not it["weak_label"][c]}
                  for it in items]
        att = attention_maps(runs[shown].model, images.to(self.device)).cpu()
        self.save(plots.attention_grid(images, att, self.classes, chosen,
                                       attention_on_class(att, labels),
                                       f"attention of {title(shown, self.cfg)}, target val",
                                       labels=labels, absent=absent), figure)
        return self._attention_table(runs, split)

    def _attention_table(self, runs: dict, split) -> pd.DataFrame:
        columns = {}
        for name, run in runs.items():
            share = attention_share(run.model, split, self.device)
            columns[(short_titles().get(name, name), "IoU (%)")] = run.metrics["target_val"]["iou"]
            columns[(short_titles().get(name, name), "attention on class (%)")] = share["on_class"]
        columns[("class", "area (%)")] = share["area"]
        return pd.DataFrame(columns, index=self.classes).round(1)

    RECORDS = {"study": "make study", "mechanisms": "make mechanisms",
               "ablation": "make ablation", "results": "make reproduce"}

    def record(self, name: str) -> dict:
        """A committed record of the default preset, whatever preset this notebook runs:
        figures/<name>.json for a name of RECORDS — the weak-label study ("study", seed 0,
        chosen on target val), each mechanism against its control ("mechanisms", seed 0 and
        seeds 0-2), the controls over seeds ("ablation"), the series over seeds ("results").
        Raises FileNotFoundError naming the
        command that writes a missing one."""
        if name not in self.RECORDS:
            raise ValueError(f"record must be one of {sorted(self.RECORDS)}, got {name!r}")
        path = self.records_dir / f"{name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; `{self.RECORDS[name]}` writes it")
        return json.loads(path.read_text(encoding="utf-8"))

    def study(self) -> dict:
        """The committed weak-label study (record "study")."""
        return self.record("study")

    def mechanisms(self) -> dict:
        """The committed record of each mechanism against its control (record
        "mechanisms")."""
        return self.record("mechanisms")

    def saw(self, text: str) -> None:
        """Show "what we saw" as rendered markdown: `text` with this run's numbers formatted
        into it by the cell that calls this, so the prose a reader sees is the run's own."""
        display(Markdown(text))

    def show(self, fig) -> None:
        """Show a figure once, without saving it."""
        display(fig)
        plt.close(fig)

    def save(self, fig, name: str) -> None:
        """Save a figure as <figures dir>/<name>.png and show it once."""
        plots.save_figure(fig, name, self.figures_dir)
        self.show(fig)

    def write_summary(self, name: str, summary: dict) -> None:
        """The notebook's numbers as RUN_DIR/results/<preset>/<name>_seed<SEED>.json."""
        write_json(self.run_dir / "results" / self.preset / f"{name}_seed{self.seed}.json",
                   summary)


SERIES_PRESETS = tuple(p for p in PRESETS if not p.startswith("paper"))
PARAMETERS = ("PRESET", "SEED", "DEVICE", "RUN_DIR", "FIGURES_DIR", "INTERACTIVE")


def check_parameters(namespace: dict, extra: tuple = ()) -> dict:
    """The notebook's parameters from its namespace (globals()), checked before any work.

    Every ALL-CAPS name that is not an imported constant is a parameter: one that is not
    PARAMETERS or `extra` (papermill -p EPOCHS 3, a typo) is an error listing the valid
    names; a wrong type or value names the parameter, what was given and what is allowed."""
    valid = PARAMETERS + tuple(extra)
    given = {k: v for k, v in namespace.items()
             if k.isupper() and not k.startswith("_") and not _imported(k, v, namespace)}
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; this notebook takes {list(valid)}")
    missing = [k for k in valid if k not in given]
    if missing:
        raise ValueError(f"parameter(s) {missing} are not set; run the parameters cell first")

    def need(ok, name, allowed):
        if not ok:
            raise ValueError(f"{name}={given[name]!r}: expected {allowed}")

    need(given["PRESET"] in SERIES_PRESETS, "PRESET",
         f"one of {list(SERIES_PRESETS)} (the paper presets need the real datasets: see "
         f"notebook 07 and `wsda train`)")
    for name in ("SEED", "SEEDS"):
        if name in given:
            low = 0 if name == "SEED" else 1
            need(type(given[name]) is int and given[name] >= low, name,
                 f"a whole number >= {low}")
    need(isinstance(given["DEVICE"], str) and DEVICE_NAMES.match(given["DEVICE"]), "DEVICE",
         "'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'")
    need(isinstance(given["RUN_DIR"], str | Path), "RUN_DIR", "a folder path")
    need(given["FIGURES_DIR"] is None or isinstance(given["FIGURES_DIR"], str | Path),
         "FIGURES_DIR", "None (build/figures/<PRESET>/) or a folder path")
    need(isinstance(given["INTERACTIVE"], bool), "INTERACTIVE", "True or False")
    return given


def _imported(name: str, value, namespace: dict) -> bool:
    """Whether `name` is a module's constant imported into the notebook (EVALUATIONS, ...); the
    notebook's own module (__main__, whose namespace this is) does not count. Scalars (the
    parameters' own types) never count: Python shares small ints and short strings between
    modules, so another module's `SEED = 0` is the very same object as the notebook's."""
    if value is None or isinstance(value, bool | int | float | str | Path):
        return False
    missing = object()
    return any(getattr(module, name, missing) is value for module in list(sys.modules.values())
               if getattr(module, "__dict__", None) is not namespace)


def check_interpreter() -> None:
    """Under `make reproduce` the kernel must be the interpreter that started the series
    (reproduce.py puts its prefix in WSDA_PYTHON_PREFIX): another environment's kernel would
    run other versions of every library. Raises RuntimeError naming both."""
    expected = os.environ.get(PYTHON_PREFIX)
    if expected and Path(sys.prefix).resolve() != Path(expected):
        raise RuntimeError(f"this kernel runs {sys.executable} (prefix {sys.prefix}), not the "
                           f"interpreter that started the series (prefix {expected}); run the "
                           f"notebooks with the kernel 'Python 3 (wsda)'")


def start(namespace: dict, extra: tuple = ()) -> Session:
    """Check the notebook's parameters (check_parameters), then load the benchmark.

    In a notebook: `nb = session.start(globals())`, right after the parameters cell."""
    p = check_parameters(namespace, extra)
    check_interpreter()
    cfg = preset(p["PRESET"])
    device = resolve_device(p["DEVICE"])
    here = Path.cwd()  # the notebook's folder
    run_dir = here / p["RUN_DIR"]
    figures = Path(p["FIGURES_DIR"] or here / ".." / "build" / "figures" / p["PRESET"])
    bench = load(cfg.data, run_dir / "data")
    pd.set_option("display.max_colwidth", 80)  # stage titles whole in every table
    print(f"preset {p['PRESET']}, seed {p['SEED']}, device {device}; figures -> {figures}; "
          f"splits:", {name: len(split) for name, split in bench.splits.items()})
    return Session(p["PRESET"], p["SEED"], cfg, device, bench, run_dir, figures,
                   p["INTERACTIVE"], here / RECORDS_DIR)
