"""The session a notebook opens from its parameters cell: one call gives it the config,
the device, the benchmark, `stage(name)`, `save(figure)` and a place for its summary.

    nb = notebook.start(PRESET, SEED, DEVICE, RUN_DIR, FIGURES_DIR, INTERACTIVE)
    source_only = nb.stage("source_only")
    nb.save(plots.iou_bars(...), "01_per_class_iou")

Figures go to FIGURES_DIR when it is given (`make reproduce` passes the repository's
figures/ for the default preset) and to build/figures/<preset>/ otherwise, so a notebook run
by hand never overwrites the committed figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from . import plots
from .atomic import atomic_write, write_json
from .config import PRESETS, Config, preset
from .data import Benchmark, load
from .engine import resolve_device
from .results import render_markdown, run_metadata, stage_table, summarise
from .stages import STAGES, StageResult, run_stage

REPO = Path(__file__).resolve().parent.parent


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

    @property
    def classes(self) -> tuple[str, ...]:
        return self.bench.class_set.names

    def stage(self, name: str, seed: int | None = None) -> StageResult:
        """The cached run of stage `name` (trained first if needed) for `seed` (default
        SEED); a progress bar only when interactive."""
        return run_stage(name, self.cfg, self.bench, self.seed if seed is None else seed,
                         self.device, self.run_dir / "models", progress=self.interactive)

    def stages(self, names, seed: int | None = None) -> dict[str, StageResult]:
        return {name: self.stage(name, seed) for name in names}

    def titles(self, names) -> dict[str, str]:
        return {name: STAGES[name].title for name in names}

    def table(self, runs: dict) -> pd.DataFrame:
        """mIoU and gap closed on target val and target test, one row per stage."""
        titles = self.titles(runs)
        val, test = (stage_table(runs, titles, s) for s in ("target_val", "target_test"))
        return pd.concat({"target val": val, "target test": test}, axis=1)

    def summarise(self, per_seed: dict) -> dict:
        """results.json's content from per_seed[stage][seed] = metrics (results.summarise),
        with this run's preset, commit, date and machine."""
        return summarise(per_seed, self.titles(per_seed), self.classes,
                         run_metadata(self.preset, str(self.device)))

    def show(self, fig) -> None:
        """Show a figure without saving it."""
        plt.show()

    def save(self, fig, name: str) -> Path:
        """Save a figure as <figures dir>/<name>.png and show it."""
        path = plots.save_figure(fig, name, self.figures_dir)
        plt.show()
        return path

    def write_summary(self, name: str, summary: dict) -> Path:
        """The notebook's numbers as RUN_DIR/results/<preset>/<name>_seed<SEED>.json."""
        path = self.run_dir / "results" / self.preset / f"{name}_seed{self.seed}.json"
        write_json(path, summary)
        return path


def start(PRESET: str, SEED: int, DEVICE: str, RUN_DIR, FIGURES_DIR=None,
          INTERACTIVE: bool = True) -> Session:
    """Check the parameters, then load the benchmark; errors name the parameter."""
    if PRESET not in PRESETS:
        raise ValueError(f"PRESET={PRESET!r}: expected one of {PRESETS}")
    if isinstance(SEED, bool) or not isinstance(SEED, int) or SEED < 0:
        raise ValueError(f"SEED={SEED!r}: expected a whole number >= 0")
    if not isinstance(INTERACTIVE, bool):
        raise ValueError(f"INTERACTIVE={INTERACTIVE!r}: expected True or False")
    cfg = preset(PRESET)
    device = resolve_device(DEVICE)
    run_dir = Path(RUN_DIR)
    figures = Path(FIGURES_DIR) if FIGURES_DIR else REPO / "build" / "figures" / PRESET
    bench = load(cfg.data, run_dir / "data", verbose=INTERACTIVE)
    print(f"preset {PRESET}, seed {SEED}, device {device}; figures -> {figures}; splits:",
          {name: len(split) for name, split in bench.splits.items()})
    return Session(PRESET, SEED, cfg, device, bench, run_dir, figures, INTERACTIVE)


def write_results(results: dict, figures_dir) -> None:
    """results.json and its Markdown table results.md, atomically, into figures_dir."""
    figures_dir = Path(figures_dir)
    write_json(figures_dir / "results.json", results)
    atomic_write(figures_dir / "results.md", lambda f: f.write(render_markdown(results).encode()))
