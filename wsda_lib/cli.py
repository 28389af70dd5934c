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

    data = sub.add_parser("data", help="tools for the real datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    check = data_sub.add_parser("check", help="validate a dataset tree before training")
    check.add_argument("--dataset", required=True, choices=["gta5", "synthia", "cityscapes"])
    check.add_argument("--root", required=True, type=Path)
    check.add_argument("--split", default="train", help="cityscapes only: train or val")
    check.add_argument("--classes", type=int, default=None,
                       help="19 (default for GTA5/Cityscapes) or 16/13 (default 16 for SYNTHIA)")
    return p


def _data_check(args) -> int:
    """Print what is wrong with a dataset tree, by file name; non-zero exit on any problem."""
    from .data.cityscapes import open_dataset
    from .data.files import DatasetError

    kwargs = {"size": None}
    if args.classes:
        kwargs["num_classes"] = args.classes
    if args.dataset == "cityscapes":
        kwargs["split"] = args.split
    try:
        report = open_dataset(args.dataset, args.root, **kwargs).check()
    except (DatasetError, ValueError) as e:
        print(f"wsda data check: {e}", file=sys.stderr)
        return 2
    print(f"{args.dataset} at {args.root}: {report}")
    return 0 if report.ok else 1


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "data":
        return _data_check(args)
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
