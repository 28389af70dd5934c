"""The `wsda` console script."""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

import torch

from . import __version__, distributed, runs, study
from .config import (
    PRESETS,
    Config,
    DataConfig,
    ModelConfig,
    TrainConfig,
    override,
    preset,
    validate,
)
from .data import load, open_dataset
from .data.files import DatasetError
from .engine import resolve_device
from .evaluate import scores as evaluate_scores
from .reproduce import NotebookFailed, reproduce
from .stages import (
    STAGES,
    build_model,
    chain,
    evaluate_splits,
    fixed_fields,
    load_weights,
    run_stage,
    stage_config,
)


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
                   help="folder for executed notebooks (default: build/ for the default "
                        "preset, build/PRESET/ otherwise); figures go to figures/ only for the "
                        "default preset in the default folder, else to OUT/figures/PRESET")
    r.add_argument("--run-dir", type=Path, default=None, help="cached runs (default runs/)")
    r.add_argument("--cell-timeout", type=int, default=1800, help="seconds per cell")

    t = sub.add_parser("train", help="train one stage (cached like the notebooks' runs)")
    t.add_argument("--preset", choices=PRESETS, default="default",
                   help="the config to start from (default: %(default)s)")
    t.add_argument("--stage", default="source_only", choices=list(STAGES), metavar="STAGE",
                   help="one of: " + ", ".join(STAGES) + " (default: %(default)s); an "
                   "adaptation stage first loads or trains the stage it starts from")
    t.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    t.add_argument("--device", default="auto", help="auto (GPU if present), cpu or cuda[:N]")
    t.add_argument("--run-dir", type=Path, default=Path("runs"),
                   help="cached data and trained runs (default: runs/)")
    t.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="config overrides, e.g. train.iterations=500 adapt.lambda_cw=0.01")
    t.add_argument("--source-root", type=Path, help="GTA5 or SYNTHIA (paper presets)")
    t.add_argument("--target-root", type=Path, help="Cityscapes (paper presets)")

    st = sub.add_parser("study", help="the weak-label study: why UDA's pseudo-weak labels "
                        "collapse and which fix helps; writes figures/study.json")
    st.add_argument("--preset", choices=PRESETS, default="default")
    st.add_argument("--device", default="auto", help="auto (GPU if present), cpu or cuda[:N]")
    st.add_argument("--run-dir", type=Path, default=Path("runs"),
                    help="cached data and trained runs (default: runs/)")
    st.add_argument("--out", type=Path, default=None, help="where study.json and its figures "
                    "go (default: figures/ for the default preset, build/study/PRESET/ else)")

    e = sub.add_parser("evaluate", help="evaluate a checkpoint written by `wsda train`")
    e.add_argument("--checkpoint", required=True, type=Path)
    e.add_argument("--device", default="auto")
    e.add_argument("--run-dir", type=Path, default=Path("runs"),
                   help="where the cached benchmark lives")

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
    kwargs = {"size": None, "checking": True}
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


def _parse_overrides(pairs) -> dict:
    changes = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set {pair!r}: expected FIELD=VALUE, e.g. train.iterations=500")
        key, value = pair.split("=", 1)
        try:
            changes[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            changes[key] = value  # a plain string such as adam
    return changes


def _train(args) -> int:
    roots = {f"data.{k}": str(v.resolve()) for k, v in
             (("source_root", args.source_root), ("target_root", args.target_root)) if v}
    changes = _parse_overrides(args.set)
    clash = sorted(set(changes) & fixed_fields(args.stage))
    if clash:
        raise ValueError(f"--set {', '.join(clash)}: stage {args.stage!r} sets this itself "
                         f"(it is what the stage is); choose another --stage instead")
    cfg = override(preset(args.preset), **changes, **roots)
    for name in chain(args.stage):  # every stage's config can train, before any data is made
        stage_config(name, cfg)
    runs.check_writable(args.run_dir)
    device = resolve_device(distributed.init_from_env(args.device))
    if distributed.is_main():  # rank 0 generates (or measures) what is cached; others wait
        load(cfg.data, args.run_dir / "data", verbose=True)
    distributed.barrier()
    bench = load(cfg.data, args.run_dir / "data", verbose=False)
    result = run_stage(args.stage, cfg, bench, args.seed, device, args.run_dir / "models",
                       progress=distributed.is_main())
    if not distributed.is_main():
        return 0
    print(json.dumps({"run": str(result.run.dir), "loaded": result.run.loaded,
                      **{s: round(result.metrics[s]["miou"], 2)
                         for s in ("source_val", "target_val", "target_test")},
                      "target_test_scored_on": result.metrics["target_test"].get("scored_on")}))
    return 0


def _checkpoint_config(path: Path, state) -> Config:
    """The config a checkpoint was trained with: stored in it by `wsda train`, else read
    from the config.json beside it. Without initial weights: the checkpoint holds them all."""
    saved = state.get("config") if isinstance(state, dict) else None
    if not isinstance(saved, dict):
        beside = path.parent / "config.json"
        if not beside.is_file():
            raise FileNotFoundError(f"checkpoint {path} holds no config and there is no "
                                    f"{beside}; evaluate a checkpoint written by `wsda train`")
        saved = runs.read_json(beside)
    sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
    try:
        cfg = Config(**{k: cls(**{f: v for f, v in saved.get(k, {}).items()
                                  if f in cls.__dataclass_fields__})
                        for k, cls in sections.items()})
    except TypeError as e:
        raise ValueError(f"checkpoint {path}: its config does not read as a wsda config "
                         f"({e})") from None
    cfg.model.backbone_weights = None
    return validate(cfg)


def _printed(scores: dict) -> dict:
    """What `wsda evaluate` prints of one split's scores: mIoU and IoUs (the project's
    convention), how many images were scored, and, for 16 or 13 classes, the official
    Cityscapes script's mIoU (docs/method.md §10)."""
    out = {"miou": round(scores["miou"], 2), "iou": [round(x, 2) for x in scores["iou"]],
           "scored_on": scores.get("scored_on")}
    if scores.get("outside_protocol") is not None and len(scores["iou"]) < 19:
        official = evaluate_scores(scores["confusion"], outside=scores["outside_protocol"])
        out["official_miou"] = round(official["miou"], 2)
    return out


def _evaluate(args) -> int:
    state = runs.load_checkpoint(args.checkpoint)
    cfg = _checkpoint_config(args.checkpoint, state)
    bench = load(cfg.data, args.run_dir / "data", verbose=False)
    model = build_model(cfg, bench.class_set)
    load_weights(model, state, args.checkpoint, cfg.model)
    device = resolve_device(args.device)
    scores = evaluate_splits(model.to(device), bench, cfg, device)
    print(json.dumps({s: _printed(v) for s, v in scores.items()}))
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("train", "evaluate"):
        try:
            return _train(args) if args.command == "train" else _evaluate(args)
        except (ValueError, KeyError, OSError, FloatingPointError) as e:
            message = e.args[0] if isinstance(e, KeyError) and e.args else e
            print(f"wsda {args.command}: {message}", file=sys.stderr)
            return 2
        finally:
            if distributed.is_distributed():
                torch.distributed.destroy_process_group()
    if args.command == "study":
        out = args.out or (Path("figures") if args.preset == "default"
                           else Path("build/study") / args.preset)
        return study.main(args.preset, args.run_dir, out, args.device)
    if args.command == "data":
        return _data_check(args)
    if args.command == "reproduce":
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
