"""Predictions as label files, and the official Cityscapes script's score of them.

`export_predictions` (`wsda evaluate --export`) writes one label PNG per image at the ground
truth's native resolution, in the dataset's own label values: Cityscapes labelIds for the
real datasets (`export_cityscapes`), the class file's stored values or colours for a folder
dataset (data/folders.py), class indices for the embedded benchmark;
`official_scores` (`wsda official-eval`) scores such a folder with cityscapesscripts'
evalPixelLevelSemanticLabeling in-process, as its own command cannot under NumPy 2.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from bisect import bisect_left
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from wsda_lib.data.classes import protocol
from wsda_lib.training.evaluate import batch_where, predict, split_name

OFFICIAL_EXTRA = "pip install -e '.[official]'"


def _native_size(dataset, index: int, label: torch.Tensor) -> tuple[int, int]:
    """(height, width) of item `index`'s ground truth as stored: the label file's header for
    file datasets (whatever their resize setting), else the label the dataset gives."""
    base = dataset
    while hasattr(base, "split"):  # WithItems
        base = base.split
    if hasattr(base, "native_label_size"):
        width, height = base.native_label_size(index)
        return height, width
    return tuple(label.shape[-2:])


@torch.no_grad()
def export_predictions(model, dataset, out_dir: str | Path, device="cpu",
                       batch_size: int = 1) -> list[Path]:
    """Write one label PNG per image, `<image stem>.png` in out_dir, in the dataset's own
    label values (its protocol's to_label_ids: Cityscapes labelIds (uint8, H x W) for
    cityscapesscripts' evalPixelLevelSemanticLabeling, a folder dataset's stored values or
    colours (H x W x 3); class indices where there is no protocol). Predictions are made at
    the ground truth's native resolution (the logits upsampled to the label file's size,
    2048x1024 for Cityscapes val), whatever size the dataset resizes its images and labels
    to: the official script refuses predictions of another size. Logits that hold NaN or
    inf are a FloatingPointError naming the split and the batch. Returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        return _export(model, dataset, out_dir, batch_size, device)
    finally:
        model.train(was_training)


export_cityscapes = export_predictions  # Cityscapes labelIds for the real datasets


def _export(model, dataset, out_dir: Path, batch_size: int, device) -> list[Path]:
    written, split = [], split_name(dataset)
    for b, batch in enumerate(DataLoader(dataset, batch_size=batch_size)):
        images, where = batch["image"].to(device), f"export of {batch_where(split, b, batch)}"
        sizes = [_native_size(dataset, int(i), lb)
                 for i, lb in zip(batch["index"], batch["label"], strict=True)]
        if len(set(sizes)) == 1:
            preds = list(predict(model, images, sizes[0], where).cpu().numpy())
        else:  # labels of several sizes in one batch: one image at a time
            preds = [predict(model, images[k: k + 1], s, where)[0].cpu().numpy()
                     for k, s in enumerate(sizes)]
        for name, p in zip(batch["name"], preds, strict=True):
            path = out_dir / f"{Path(name).stem}.png"
            protocol = getattr(dataset, "protocol", None)
            stored = protocol.to_label_ids(p) if protocol is not None else p.astype(np.uint8)
            Image.fromarray(stored).save(path)
            written.append(path)
    return written


def _cityscapes_scripts():
    """cityscapesscripts' evalPixelLevelSemanticLabeling module, with `np.in1d` supplied as
    `np.isin` when NumPy lacks it (removed in NumPy 2.4; cityscapesscripts 2.3 calls it for
    the instance-level scores). ImportError saying what to install when it is missing."""
    try:
        from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as module
    except ImportError as e:
        raise ImportError(f"the official Cityscapes evaluation needs cityscapesscripts "
                          f"({e}): {OFFICIAL_EXTRA}") from None
    if not hasattr(np, "in1d"):
        np.in1d = np.isin
    return module


def _predictions_for(gts: list[Path], predictions_dir: Path) -> list[Path]:
    """The prediction of each ground-truth file, found as cityscapesscripts finds it: the one
    PNG under predictions_dir (any depth) named `<city>_<seq>_<frame>*.png`. A ground-truth
    file with none, or with several, is a ValueError naming it."""
    if not predictions_dir.is_dir():
        raise ValueError(f"{predictions_dir}: no such folder of predictions")
    found = sorted((p.name, p) for p in predictions_dir.rglob("*.png") if p.is_file())
    chosen, missing, several = [], [], []
    for gt in gts:
        key = "_".join(gt.name.split("_")[:3])  # <city>_<seq>_<frame>
        i, matches = bisect_left(found, (key,)), []
        while i < len(found) and found[i][0].startswith(key):
            matches.append(found[i][1])
            i += 1
        if not matches:
            missing.append(gt)
        elif len(matches) > 1:
            several.append(gt)
        else:
            chosen.append(matches[0])
    if missing:
        raise ValueError(f"{predictions_dir}: no prediction for {len(missing)} of {len(gts)} "
                         f"ground-truth file(s), e.g. {[str(p) for p in missing[:3]]}; expected "
                         f"<city>_<seq>_<frame>*.png for each (as export_cityscapes writes)")
    if several:
        raise ValueError(f"{predictions_dir}: several predictions match ground-truth file(s) "
                         f"{[str(p) for p in several[:3]]}; keep one <city>_<seq>_<frame>*.png "
                         f"for each")
    return chosen


def _percent_or_none(values) -> float | None:
    """100 x the mean of the non-NaN values (fractions), or None when there is none."""
    kept = [v for v in values if not math.isnan(v)]
    return 100 * float(np.mean(kept)) if kept else None


def official_scores(predictions_dir: str | Path, gt_root: str | Path, split: str = "val",
                    num_classes: int = 19) -> dict:
    """The official Cityscapes score of the labelId PNGs in predictions_dir (as
    export_cityscapes writes them) against every `gtFine/{split}/<city>/*_gtFine_labelIds.png`
    under gt_root: cityscapesscripts' evaluateImgLists, in-process (`_cityscapes_scripts`),
    with instance-level scores when every `*_gtFine_instanceIds.png` is there.

    Returns, JSON-ready: "miou" (%), the mean IoU over the classes of protocol(num_classes)
    (19, or 16/13: the official convention of evaluate(), docs/method.md §10); "iou" {class
    name: IoU (%) or None where the class is absent}; "iiou" (%), the mean instance-level
    IoU, when computed; "images", "split", "classes", "convention" ("official").

    Errors: ImportError naming `pip install -e '.[official]'` without cityscapesscripts;
    ValueError naming the ground-truth files without a prediction, an empty split, or what
    the script refused (a prediction of another size, an unknown label id)."""
    module = _cityscapes_scripts()
    gt_dir = Path(gt_root) / "gtFine" / split
    gts = sorted(gt_dir.glob("*/*_gtFine_labelIds.png"))
    if not gts:
        raise ValueError(f"{gt_dir}: no ground truth (<city>/*_gtFine_labelIds.png)")
    preds = _predictions_for(gts, Path(predictions_dir))
    args = copy.copy(module.args)  # the module's settings, left as they are
    args.evalInstLevelScore = all(Path(str(g).replace("labelIds", "instanceIds")).is_file()
                                  for g in gts)
    args.evalPixelAccuracy, args.JSONOutput, args.quiet = False, False, True
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            result = module.evaluateImgLists([str(p) for p in preds], [str(g) for g in gts],
                                             args)
    except SystemExit:  # the script prints "ERROR: ..." and exits
        said = printed.getvalue().strip().splitlines() or ["no message"]
        raise ValueError(f"cityscapesscripts refused the predictions in {predictions_dir}: "
                         f"{said[-1]}") from None
    names = protocol(num_classes).class_set.names
    iou = {n: float(result["classScores"][n]) for n in names}
    out = {"miou": _percent_or_none(iou.values()),
           "iou": {n: None if math.isnan(v) else 100 * v for n, v in iou.items()},
           "images": len(gts), "split": split, "classes": num_classes, "convention": "official"}
    if args.evalInstLevelScore:
        out["iiou"] = _percent_or_none(float(result["classInstScores"][n]) for n in names)
    return out
