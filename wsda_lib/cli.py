"""The `wsda` console script."""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

import numpy as np
import torch

from wsda_lib import __version__
from wsda_lib.core import distributed
from wsda_lib.core.atomic import strict
from wsda_lib.core.config import (
    PRESETS,
    Config,
    DataConfig,
    ModelConfig,
    TrainConfig,
    override,
    preset,
    validate,
)
from wsda_lib.core.device import NoCuda, resolve_device
from wsda_lib.data import load, open_dataset
from wsda_lib.data.files import image_size
from wsda_lib.data.folders import (
    CLASS_FILE,
    UnlabelledImages,
    export_benchmark,
    export_names,
    folder_images,
    not_images,
    open_folder_split,
    read_class_file,
)
from wsda_lib.data.tags import read_image_labels, read_points
from wsda_lib.experiments import study
from wsda_lib.experiments.reproduce import IDLE_LIMIT, SERIES_PRESETS, NotebookFailed, reproduce
from wsda_lib.method.point_supervision import split_points
from wsda_lib.records.export import export_predictions
from wsda_lib.stages import (
    STAGES,
    build_model,
    chain,
    check_chain_uses,
    evaluate_splits,
    fixed_fields,
    load_weights,
    run_stage,
    stage_config,
)
from wsda_lib.training import runs
from wsda_lib.training.evaluate import scores as evaluate_scores


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wsda", description="Domain adaptive semantic "
                                "segmentation using weak labels: the notebook series and tools.")
    p.add_argument("--version", action="version", version=f"wsda {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _reproduce_parser(sub)
    _train_parser(sub)
    _study_parser(sub)
    _experiment_parser(sub, "mechanisms", "each adversarial term over a range of strengths "
                       "and the self-training candidates, against their controls",
                       "mechanisms.json")
    _calibrate_parser(sub)
    _ablation_parser(sub)
    _evaluate_parser(sub)
    _data_parser(sub)
    from wsda_lib.experiments import gpu_check  # its arguments live beside it
    gpu_check.add_parser(sub)
    _official_eval_parser(sub)
    return p


def _reproduce_parser(sub) -> None:
    r = sub.add_parser("reproduce", help="run the notebook series headless; rewrite figures/")
    r.add_argument("--preset", choices=SERIES_PRESETS, default="default")
    r.add_argument("--seed", type=int, default=0, help="seed of notebooks 01-05; the first "
                   "of the seeds of notebook 06")
    r.add_argument("--seeds", type=int, default=3, help="number of seeds notebook 06 runs")
    r.add_argument("--device", default="auto", help="auto (GPU if present), cpu or cuda[:N]")
    r.add_argument("--out", type=Path, default=None,
                   help="folder for executed notebooks (default: build/ for the committed "
                        "series, default preset, seed 0, 3 seeds; build/PRESET/ or "
                        "build/default-seedS-Nseeds/ otherwise); figures/ and the readers' "
                        "copies are rewritten only by the committed series, others write "
                        "to OUT/figures/PRESET")
    r.add_argument("--run-dir", type=Path, default=None, help="cached runs (default runs/)")
    r.add_argument("--cell-timeout", type=int, default=None,
                   help="seconds a cell may run (default: no limit; a training cell grows with "
                        "the seeds, the stages and the machine)")
    r.add_argument("--idle-limit", type=int, default=IDLE_LIMIT,
                   help=f"seconds a cell's kernel may sit idle with nothing written before the "
                        f"run is stopped (default {IDLE_LIMIT}; 0: no watchdog)")


def _train_parser(sub) -> None:
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
    t.add_argument("--source-root", type=Path, help="GTA5 or SYNTHIA (paper presets), or the "
                   "source folder (data.dataset=folders)")
    t.add_argument("--target-root", type=Path, help="Cityscapes (paper presets), or the "
                   "target folder (data.dataset=folders)")


def _experiment_parser(sub, name: str, help: str, writes: str, presets=PRESETS):
    """A command that trains into RUN_DIR and writes its record: --preset, --device,
    --run-dir, and --out (figures/ for the default preset, build/NAME/PRESET/ else)."""
    p = sub.add_parser(name, help=f"{help}; writes figures/{writes}")
    p.add_argument("--preset", choices=presets, default="default")
    p.add_argument("--device", default="auto", help="auto (GPU if present), cpu or cuda[:N]")
    p.add_argument("--run-dir", type=Path, default=Path("runs"),
                   help="cached data and trained runs, shared with the series (default: runs/)")
    p.add_argument("--out", type=Path, default=None, help=f"where {writes} goes (default: "
                   f"figures/ for the default preset, build/{name}/PRESET/ else)")
    return p


def _study_parser(sub) -> None:
    _experiment_parser(sub, "study", "the weak-label study: why UDA's pseudo-weak labels "
                       "collapse and which fix helps", "study.json")


def _calibrate_parser(sub) -> None:
    _experiment_parser(sub, "calibrate", "measure the embedded benchmark's variants against "
                       "the paper's source-only row", "benchmark_calibration.json",
                       ("smoke", "default", "full"))


def _ablation_parser(sub) -> None:
    a = _experiment_parser(sub, "ablation", "the controls behind the series' claims, each "
                           "judged by the paired t-test on target test", "ablation.json",
                           ("smoke", "default", "full"))
    a.add_argument("--seeds", type=int, default=3, help="seeds 0..SEEDS-1 (default 3)")


def _evaluate_parser(sub) -> None:
    e = sub.add_parser("evaluate", help="evaluate a checkpoint written by `wsda train`")
    e.add_argument("--checkpoint", required=True, type=Path)
    e.add_argument("--device", default="auto")
    e.add_argument("--run-dir", type=Path, default=Path("runs"),
                   help="where the cached benchmark lives")
    e.add_argument("--export", type=Path, default=None, metavar="DIR",
                   help="also write the predictions on --split as label PNGs in the dataset's "
                        "own label values (a new or empty folder)")
    e.add_argument("--split", default=None, choices=("target_val", "target_test"),
                   help="the split --export writes (default: target_test)")


def _data_parser(sub) -> None:
    data = sub.add_parser("data", help="tools for datasets: check a tree, export the embedded one")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    check = data_sub.add_parser("check", help="validate a dataset tree before training")
    check.add_argument("--dataset", required=True,
                       choices=["gta5", "synthia", "cityscapes", "folders"])
    check.add_argument("--root", required=True, type=Path,
                       help="the dataset's folder (folders: one domain, img_dir/ and ann_dir/)")
    check.add_argument("--split", choices=("train", "val", "test"), default=None,
                       help="cityscapes: train or val; folders: train, val or test (default: "
                            "every split there is, each reported)")
    check.add_argument("--classes", type=int, default=None,
                       help="19 (default for GTA5/Cityscapes) or 16/13 (default 16 for SYNTHIA)")
    check.add_argument("--class-file", type=Path, default=None,
                       help="folders: the class file (default: ROOT/classes.json)")
    check.add_argument("--image-labels", type=Path, default=None,
                       help="folders: a CSV of image,class[,class...] for the train images")
    check.add_argument("--points", type=Path, default=None,
                       help="folders: a CSV of image,class,x,y for the train images")
    check.add_argument("--img-suffix", default=None,
                       help="folders: what ends an image's name (default: .png, .jpg or .jpeg)")
    check.add_argument("--seg-map-suffix", default=".png",
                       help="folders: what ends a label's name (default: %(default)s)")
    export = data_sub.add_parser("export-embedded", help="write the embedded benchmark as a "
                                 "folder dataset (source/ and target/, with a class file)")
    export.add_argument("out", type=Path, help="a new folder (an existing one is refused)")
    export.add_argument("--preset", choices=PRESETS, default="default")
    export.add_argument("--run-dir", type=Path, default=Path("runs"),
                        help="where the cached benchmark lives (default: runs/)")


def _official_eval_parser(sub) -> None:
    """`wsda official-eval`: exported predictions scored by cityscapesscripts in-process."""
    oe = sub.add_parser("official-eval", help="score exported predictions with the official "
                        "Cityscapes script (cityscapesscripts, in-process; prints one JSON line)")
    oe.add_argument("--gt", required=True, type=Path,
                    help="the Cityscapes root (gtFine/SPLIT/<city>/*_gtFine_labelIds.png)")
    oe.add_argument("--predictions", required=True, type=Path,
                    help="folder of labelId PNGs, one <city>_<seq>_<frame>*.png per ground-truth "
                         "file (as wsda_lib.records.export.export_cityscapes writes them)")
    oe.add_argument("--split", default="val", help="gtFine split to score (default: val)")
    oe.add_argument("--classes", type=int, default=19, choices=(19, 16, 13),
                    help="mIoU over these classes (16/13: the official convention for SYNTHIA "
                         "models; default 19)")


def _data_check(args) -> int:
    """Print what is wrong with a dataset tree, by file name; non-zero exit on any problem.
    `data export-embedded` goes to _export_embedded."""
    if args.data_command == "export-embedded":
        return _export_embedded(args)
    if args.dataset == "folders":
        return _check_folders(args)
    for option in ("class_file", "image_labels", "points", "img_suffix"):
        if getattr(args, option):
            raise ValueError(f"--{option.replace('_', '-')} {getattr(args, option)}: for "
                             f"--dataset folders only")
    kwargs = {"size": None, "checking": True}
    if args.classes:
        kwargs["num_classes"] = args.classes
    if args.dataset != "cityscapes":
        if args.split:
            raise ValueError(f"--split {args.split}: only Cityscapes has splits; {args.dataset} "
                             f"is checked whole")
        report = open_dataset(args.dataset, args.root, **kwargs).check()
        print(f"{args.dataset} at {args.root}: {report}")
        return 0 if report.ok else 1
    ok = True
    for split in [args.split] if args.split else ["train", "val"]:
        report = open_dataset("cityscapes", args.root, split=split, **kwargs).check()
        print(f"cityscapes {split} at {args.root}: {report}")
        ok = ok and report.ok
    return 0 if ok else 1


def _check_folders(args) -> int:
    """`wsda data check --dataset folders`: every split folder of the domain at --root read
    against the class file, each reported (a train folder without ann_dir/train: its images,
    fine for a target, whose training images need no labels), the CSVs --image-labels and
    --points against the train images, then the classes no label map holds; exit 1 on any
    problem."""
    if args.classes:
        raise ValueError(f"--classes {args.classes}: a folder dataset's classes come from its "
                         f"class file (--class-file)")
    class_file = read_class_file(args.class_file or args.root / CLASS_FILE)
    splits = [args.split] if args.split else [s for s in ("train", "val", "test")
                                              if (args.root / "img_dir" / s).is_dir()]
    if not splits:
        raise ValueError(f"{args.root / 'img_dir'}: no train, val or test folder")
    suffixes = (args.img_suffix, args.seg_map_suffix)
    ok, seen = True, np.zeros(class_file.class_set.num_classes, bool)
    for split in splits:
        if split == "train" and not (args.root / "ann_dir" / "train").is_dir():
            ok = _check_unlabelled(args, class_file) and ok
            continue
        folder = open_folder_split(args.root, split, class_file, split, checking=True,
                                   suffixes=suffixes)
        report = folder.check()
        print(f"folders {split} at {args.root} (classes: {class_file.path}): {report}")
        ok = ok and report.ok
        seen[[c for c in report.labels_seen if c < len(seen)]] = True
    unseen = [n for n, s in zip(class_file.class_set.names, seen, strict=True) if not s]
    if unseen:
        print(f"classes of {class_file.path} in no label map checked: {unseen}")
    if args.image_labels or args.points:
        _check_csvs(args, class_file)
    return 0 if ok else 1


def _check_unlabelled(args, class_file) -> bool:
    """A train folder without ann_dir/train: every image read, every other file reported."""
    folder = args.root / "img_dir" / "train"
    images = folder_images(folder, args.img_suffix)
    strays = not_images(folder, {im for im, _ in images}, args.img_suffix)
    report = UnlabelledImages("train", [im for im, _ in images], class_file.class_set,
                              folder=folder, unpaired=strays, checking=True).check()
    print(f"folders train at {args.root}: no ann_dir/train, images only (a target's training "
          f"images need no labels; a source's do): {report}")
    if not (args.image_labels or args.points):
        print("no --image-labels or --points given: the train images alone can adapt (UDA); "
              "WDA needs image-level labels")
    return report.ok


def _check_csvs(args, class_file) -> None:
    """The CSVs --image-labels and --points read against the train images (tags.py); a
    mistake is a ValueError naming the file, the line and the option."""
    images = folder_images(args.root / "img_dir" / "train", args.img_suffix)
    classes = class_file.class_set.names
    tags = None
    if args.image_labels:
        tags = read_image_labels(args.image_labels, images, classes, "--image-labels")
        print(f"{args.image_labels}: {len(images)} images, {int(tags.sum())} image-level "
              f"labels")
    if args.points:
        points = read_points(args.points, images, classes,
                             [image_size(im) for im, _ in images], present=tags,
                             field="--points")
        print(f"{args.points}: {int((points >= 0).sum())} points")


def _export_embedded(args) -> int:
    bench = load(preset(args.preset).data, args.run_dir / "data")
    target = bench["target_train"]
    clicks = split_points(target, 0, export_names(len(target)))  # as ItemPoints(0) on folders
    counts = export_benchmark(bench, args.out, clicks)
    print(f"wrote {sum(counts.values())} images to {args.out}: {counts}; classes in "
          f"{args.out / 'target' / CLASS_FILE}")
    return 0


def _parse_overrides(pairs) -> dict:
    changes = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set {pair!r}: expected FIELD=VALUE, e.g. train.iterations=500")
        key, value = pair.split("=", 1)
        if key in changes:  # one of the two would be silently dropped
            raise ValueError(f"--set {key}: given twice; give each field once")
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
    _check_seed_and_device(args)  # before any data is made
    for name in chain(args.stage):  # every stage's config can train, before any data is made
        stage_config(name, cfg)
    check_chain_uses(args.stage, cfg)
    runs.check_writable(args.run_dir)
    timeout = distributed.collective_timeout()  # a bad WSDA_DIST_TIMEOUT errors before work
    # The cached data (the embedded benchmark; a real source's typical class areas, minutes
    # for GTA5) is prepared BEFORE the process group forms, under a file lock: the first rank
    # to take it computes and writes it; the others wait on the lock, not in a collective
    # that would time out, then read it (distributed.once).
    data_dir = args.run_dir / "data"
    bench = distributed.once(data_dir / ".prepare.lock",
                             lambda: load(cfg.data, data_dir, verbose=True),
                             token=distributed.job_token("wsda train data", repr(cfg.data)),
                             read=lambda: load(cfg.data, data_dir, verbose=False))
    device = resolve_device(distributed.init_from_env(args.device, timeout))
    result = run_stage(args.stage, cfg, bench, args.seed, device, args.run_dir / "models",
                       progress=distributed.is_main())
    if not distributed.is_main():
        return 0
    print(_json({"run": str(result.run.dir), "loaded": result.run.loaded,
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


def _json(obj) -> str:
    """What a command prints as its result: strict JSON on one line (NaN as null)."""
    return json.dumps(strict(obj), allow_nan=False)


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
    if args.split and not args.export:
        raise ValueError(f"--split {args.split}: names the split --export writes; give --export "
                         f"DIR too (every split is scored without it)")
    if args.export and args.export.exists() and any(args.export.iterdir()):
        raise FileExistsError(f"--export {args.export}: the folder is not empty; give a new "
                              f"or empty one, so that no file is overwritten")
    state = runs.load_checkpoint(args.checkpoint)
    cfg = _checkpoint_config(args.checkpoint, state)
    bench = load(cfg.data, args.run_dir / "data", verbose=False)
    model = build_model(cfg, bench.class_set)
    load_weights(model, state, args.checkpoint, cfg.model)
    device = resolve_device(args.device)
    scores = evaluate_splits(model.to(device), bench, cfg, device)
    print(_json({s: _printed(v) for s, v in scores.items()}))
    if args.export:
        split = args.split or "target_test"
        written = export_predictions(model, bench[split], args.export, device)
        print(f"wrote {len(written)} predictions of {split} to {args.export}")
    return 0


def _experiment_out(args, name: str) -> Path:
    """--out, or its default; the run directory is checked writable and --device valid
    before any work."""
    runs.check_writable(args.run_dir)
    resolve_device(args.device)
    return args.out or (Path("figures") if args.preset == "default"
                        else Path("build") / name / args.preset)


def _study(args) -> int:
    return study.main(args.preset, args.run_dir, _experiment_out(args, "study"), args.device)


def _mechanisms(args) -> int:
    from wsda_lib.experiments import mechanisms

    return mechanisms.main(args.preset, args.run_dir, _experiment_out(args, "mechanisms"),
                           args.device)


def _calibrate(args) -> int:
    from wsda_lib.experiments import calibration

    out = _experiment_out(args, "calibrate")
    return calibration.main(args.preset, args.run_dir, out, args.device)


def _ablation(args) -> int:
    from wsda_lib.experiments import ablation

    if args.seeds < 2:
        raise ValueError(f"--seeds must be >= 2: a verdict is a paired test over seeds, got "
                         f"{args.seeds}")
    out = _experiment_out(args, "ablation")
    return ablation.main(args.preset, args.seeds, args.run_dir, out, args.device)


def _gpu_check(args) -> int:
    from wsda_lib.experiments import gpu_check

    return gpu_check.main(args.out, args.steps, args.warmup, args.tiny, args.device)


def _official_eval(args) -> int:
    from wsda_lib.records.export import official_scores

    print(_json(official_scores(args.predictions, args.gt, args.split, args.classes)))
    return 0


def _check_seed_and_device(args) -> None:
    """--seed and --device of `train` and `reproduce`, refused (ValueError) before any work."""
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    resolve_device(args.device)


def _reproduce(args) -> int:
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    _check_seed_and_device(args)  # before notebook 00, not in it
    if args.idle_limit < 0:
        raise ValueError(f"--idle-limit must be >= 0 seconds (0: no watchdog), got "
                         f"{args.idle_limit}")
    reproduce(args.preset, args.seed, args.seeds, out=args.out, run_dir=args.run_dir,
              device=args.device, cell_timeout=args.cell_timeout,
              idle_limit=args.idle_limit or None)
    return 0


COMMANDS = {"train": _train, "evaluate": _evaluate, "study": _study, "mechanisms": _mechanisms,
            "calibrate": _calibrate, "ablation": _ablation, "data": _data_check,
            "gpu-check": _gpu_check, "official-eval": _official_eval, "reproduce": _reproduce}
# What a command reports as its one-line error (exit 2; 1 for a notebook that failed): input
# refused by a check (ValueError, DatasetError among them; KeyError for a config field),
# files and folders (OSError), a non-finite loss or logits (FloatingPointError), a package
# that is not installed (ImportError), a notebook of the series that failed (NotebookFailed)
# and a GPU check without a GPU (core.device.NoCuda).
# Anything else is a bug, and keeps its traceback.
ONE_LINE_ERRORS = (ValueError, KeyError, OSError, FloatingPointError, ImportError,
                   NotebookFailed, NoCuda)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except Exception as e:  # noqa: BLE001 - the known kinds become one line, others re-raise
        if not isinstance(e, ONE_LINE_ERRORS):
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"wsda {args.command}: {' '.join(str(message).split())}", file=sys.stderr)
        return 1 if isinstance(e, NotebookFailed) else 2
    except KeyboardInterrupt:  # Ctrl-C: a training loop has said where it stopped
        return 130
    finally:
        if distributed.is_distributed():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
