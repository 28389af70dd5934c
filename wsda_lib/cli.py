"""The `wsda` console script."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .config import PRESETS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wsda", description="Domain adaptive semantic "
                                "segmentation using weak labels: the notebook series and tools.")
    p.add_argument("--version", action="version", version=f"wsda {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("reproduce", help="run the notebook series headless; rewrite figures/")
    r.add_argument("--preset", choices=PRESETS, default="default")
    r.add_argument("--seed", type=int, default=0, help="seed of notebooks 01-04; the first "
                   "of the seeds of notebook 05")
    r.add_argument("--seeds", type=int, default=3, help="number of seeds notebook 05 runs")
    r.add_argument("--device", default="auto", help="auto (GPU if present), cpu or cuda[:N]")
    r.add_argument("--out", type=Path, default=None,
                   help="folder for executed notebooks (default build/); figures go to "
                        "figures/ for the default folder and to OUT/figures otherwise")
    r.add_argument("--run-dir", type=Path, default=None, help="cached runs (default runs/)")
    r.add_argument("--cell-timeout", type=int, default=1800, help="seconds per cell")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "reproduce":
        from .reproduce import NotebookFailed, reproduce

        try:
            if args.seeds < 1:
                raise NotebookFailed(f"--seeds must be >= 1, got {args.seeds}")
            reproduce(args.preset, args.seed, args.seeds, out=args.out, run_dir=args.run_dir,
                      device=args.device, cell_timeout=args.cell_timeout)
        except NotebookFailed as e:
            print(f"wsda reproduce: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
