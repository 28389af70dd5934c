"""Scoring real datasets leaves nothing out silently and gets nothing silently wrong: a label file
without its image is an error for a scored split (a warning for a training-only source); a
checkpoint with NaN weights, or logits that are not finite, are errors naming the file, split and
batch; the Cityscapes val reader's defaults follow the paper's protocol (native labels); trees
prepared by DAFormer's/mmsegmentation's converters check clean; `wsda official-eval` scores exported
predictions with cityscapesscripts in-process, under NumPy 2 too.

Fixtures are tiny trees in the exact on-disk formats (tests/real_trees.py)."""

import json
import math
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from real_trees import (
    ClassFromRed,
    H,
    W,
    cityscapes_tree,
    cityscapes_val_for_scoring,
    gta5_to,
    synthia_tree,
)
from real_trees import palette_label as _palette_label
from real_trees import rgb as _rgb

from wsda_lib.cli import main
from wsda_lib.core.config import preset, to_dict
from wsda_lib.data import load
from wsda_lib.data.cityscapes import cityscapes
from wsda_lib.data.files import DatasetError
from wsda_lib.data.gta5 import gta5
from wsda_lib.data.synthia import synthia
from wsda_lib.records.export import export_cityscapes
from wsda_lib.stages import build_model
from wsda_lib.training.evaluate import evaluate
from wsda_lib.training.runs import save_checkpoint

STEM = "aachen_000001_000019"


def _as_jpg(png):
    """Replace an image PNG by a JPEG of the same name: the reader reads *.png only."""
    with Image.open(png) as im:
        im.convert("RGB").save(png.with_suffix(".jpg"), quality=95)
    png.unlink()
    return png.with_suffix(".jpg")


def _loader(ds, batch_size=1):
    return torch.utils.data.DataLoader(ds, batch_size=batch_size)


# ---------------------------------------------------------------------------------------------
# A. A label file without its image: an error for a scored split, never a smaller score.

@pytest.mark.parametrize("split", ["val", "train"])
def test_cityscapes_label_without_its_image_is_an_error_naming_both(tmp_path, split):
    root = cityscapes_tree(tmp_path / "cs", splits=(("train", 3), ("val", 2)))
    jpg = _as_jpg(root / f"leftImg8bit/{split}/aachen/{STEM}_leftImg8bit.png")
    label = root / f"gtFine/{split}/aachen/{STEM}_gtFine_labelIds.png"
    # before: the split had 1 pair ("scored on 1 of 1 images") while it holds 2 label files
    with pytest.raises(DatasetError, match="without their image") as e:
        cityscapes(root, split, size=None)
    assert str(label) in str(e.value) and e.value.kind == "label file without image"
    assert f"found {jpg.name}; expected a PNG, {jpg.with_suffix('.png')}" in str(e.value)
    gta = tmp_path / "gta"
    for i in range(3):
        _rgb(gta / f"images/{i:05d}.png")
        _palette_label(gta / f"labels/{i:05d}.png", [7, 8])
    with pytest.raises(DatasetError, match=f"{STEM}_gtFine_labelIds.png"):  # before training
        load(gta5_to(root, gta), tmp_path / "cache")


def test_data_check_still_lists_the_label_and_names_the_jpg(tmp_path, capsys):
    root = cityscapes_tree(tmp_path, splits=(("val", 2),))
    _as_jpg(root / f"leftImg8bit/val/aachen/{STEM}_leftImg8bit.png")
    args = ["data", "check", "--dataset", "cityscapes", "--root", str(root), "--split", "val"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "label file without image: 1" in out and "file not read: 1" in out
    assert f"{STEM}_gtFine_labelIds.png" in out and f"found {STEM}_leftImg8bit.jpg" in out


def test_source_label_without_its_image_is_a_warning_with_count_and_names(tmp_path, gta_root):
    jpg = _as_jpg(gta_root / "images/00001.png")
    with pytest.warns(UserWarning, match=r"1 label file\(s\) without their image") as caught:
        ds = gta5(gta_root, size=None)
    assert len(ds) == 2 and f"found {jpg.name}; expected a PNG" in str(caught[0].message)
    syn = synthia_tree(tmp_path / "synthia", n=3)
    (syn / "RGB/0000002.png").unlink()
    with pytest.warns(UserWarning, match=r"GT/LABELS/0000002.png: no image"):
        assert len(synthia(syn, size=None)) == 2


# ---------------------------------------------------------------------------------------------
# B. NaN weights, NaN logits: errors naming the checkpoint and tensor, or the split and batch.

@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """(a run dir holding the smoke preset's cached benchmark, for `wsda evaluate`; its class
    set)."""
    run_dir = tmp_path_factory.mktemp("runs")
    return run_dir, load(preset("smoke").data, run_dir / "data", verbose=False).class_set


def _write_checkpoint(smoke_run, name, change) -> str:
    """A smoke-preset checkpoint whose state_dict `change(state_dict)` edits in place."""
    run_dir, class_set = smoke_run
    cfg = preset("smoke")
    torch.manual_seed(0)
    weights = build_model(cfg, class_set).state_dict()
    change(weights)
    path = run_dir / name / "checkpoint.pt"
    path.parent.mkdir()
    save_checkpoint(path, {"model": weights, "config": to_dict(cfg),
                           "model_config": to_dict(cfg.model)})
    return str(path)


def test_wsda_evaluate_refuses_a_checkpoint_with_nan_weights(smoke_run, capsys):
    def nan(weights):
        weights["classifier.branches.0.weight"][0, 0] = float("nan")
        weights["backbone.stem.0.weight"].fill_(float("inf"))

    path = _write_checkpoint(smoke_run, "nan", nan)
    args = ["evaluate", "--checkpoint", path, "--run-dir", str(smoke_run[0]), "--device", "cpu"]
    assert main(args) == 2   # before: rc 0 and an mIoU of every pixel class 0
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert f"wsda evaluate: checkpoint {path}: 2 tensor(s) hold NaN or inf" in captured.err
    assert "backbone.stem.0.weight" in captured.err


def test_wsda_evaluate_refuses_finite_weights_whose_logits_are_not(smoke_run, capsys):
    def overflow(weights):  # every ASPP branch's bias near float32's max: the sum is inf
        for k in [k for k in weights if k.startswith("classifier.branches.")]:
            if k.endswith("bias"):
                weights[k].fill_(3e38)

    path = _write_checkpoint(smoke_run, "overflow", overflow)
    args = ["evaluate", "--checkpoint", path, "--run-dir", str(smoke_run[0]), "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "split 'source_val', batch 0" in err and "logits are not finite" in err


class NanOnSecondBatch(ClassFromRed):
    def __init__(self, num_classes):
        super().__init__(num_classes)
        self.calls = 0

    def forward(self, images):
        logits, _ = super().forward(images)
        self.calls += 1
        return (logits * float("nan") if self.calls == 2 else logits), None


def test_nan_logits_are_an_error_naming_the_split_and_the_batch(tmp_path):
    root = cityscapes_tree(tmp_path, splits=(("val", 3),))
    ds = cityscapes(root, "val", size=None)
    with pytest.raises(FloatingPointError, match=rf"split 'cityscapes val {root}', batch 1 "
                       rf"\({STEM}_leftImg8bit.png\): the model's logits are not finite"):
        evaluate(NanOnSecondBatch(19), _loader(ds), 19)
    with pytest.raises(FloatingPointError, match=rf"export of split .*batch 1 \({STEM}"):
        export_cityscapes(NanOnSecondBatch(19), ds, tmp_path / "pred")


# ---------------------------------------------------------------------------------------------
# C. The Cityscapes val reader's defaults follow the paper's evaluation protocol.

def test_cityscapes_val_defaults_score_at_native_labels(tmp_path):
    cityscapes_val_for_scoring(tmp_path)       # 8x12 labels; images resized to 1024x512
    model = ClassFromRed(19)
    default = cityscapes(tmp_path, "val")
    assert default[0]["image"].shape == (3, 512, 1024) and default[0]["label"].shape == (H, W)
    ours = evaluate(model, _loader(default), 19)
    native = evaluate(model, _loader(cityscapes(tmp_path, "val", resize_labels=False)), 19)
    resized = evaluate(model, _loader(cityscapes(tmp_path, "val", resize_labels=True)), 19)
    assert ours["miou"] == native["miou"] and ours["confusion"] == native["confusion"]
    assert np.sum(ours["confusion"]) == np.sum(np.asarray(default.label(0)) != 255) + np.sum(
        np.asarray(default.label(1)) != 255)                  # every native labelled pixel
    assert resized["miou"] != ours["miou"]    # the old default: another number


def test_cityscapes_val_refuses_a_size_mismatch_by_default(tmp_path):
    root = cityscapes_tree(tmp_path, splits=(("val", 2),))
    _rgb(root / f"leftImg8bit/val/aachen/{STEM}_leftImg8bit.png", h=H + 2)
    with pytest.raises(DatasetError, match=f"sizes differ.*{STEM}"):  # before: left out
        cityscapes(root, "val", size=None)
    with pytest.warns(UserWarning, match=STEM):              # training still leaves it out
        assert len(cityscapes(root, "val", size=None, on_size_mismatch="leave out")) == 1


# ---------------------------------------------------------------------------------------------
# D. Trees prepared by DAFormer's / mmsegmentation's converters check clean.

CONVERTER_FILES = ("sample_class_stats.json", "sample_class_stats_dict.json",
                   "samples_with_class.json")


def _converted(root, labels, names):
    """What the converters add: <labels>/<name>_labelTrainIds.png and the JSON at the root."""
    for name in names:
        Image.fromarray(np.zeros((H, W), np.uint8)).save(
            root / labels / f"{name}_labelTrainIds.png")
    for f in CONVERTER_FILES:
        (root / f).write_text("{}")


def test_gta5_tree_from_the_converters_checks_clean(gta_root, capsys):
    _converted(gta_root, "labels", [f"{i:05d}" for i in range(3)])
    assert main(["data", "check", "--dataset", "gta5", "--root", str(gta_root)]) == 0
    assert "no problems" in capsys.readouterr().out   # before: 3 "label file without image"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(gta5(gta_root, size=None)) == 3


def test_synthia_tree_from_the_converters_checks_clean(tmp_path, capsys):
    root = synthia_tree(tmp_path, n=3)
    _converted(root, "GT/LABELS", [f"{i:07d}" for i in range(3)])
    assert main(["data", "check", "--dataset", "synthia", "--root", str(root)]) == 0
    assert "no problems" in capsys.readouterr().out
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(synthia(root, size=None)) == 3


# ---------------------------------------------------------------------------------------------
# E. `wsda official-eval`: cityscapesscripts in-process.

def _official_eval(capsys, *args):
    rc = main(["official-eval", *map(str, args)])
    captured = capsys.readouterr()
    return rc, (json.loads(captured.out) if rc == 0 else None), captured.err


@pytest.mark.parametrize("classes", [19, 13])
def test_official_eval_equals_evaluate_in_the_official_convention(tmp_path, capsys, classes):
    pytest.importorskip("cityscapesscripts")
    cityscapes_val_for_scoring(tmp_path / "cs")
    ds = cityscapes(tmp_path / "cs", "val", size=None, num_classes=classes, mark_outside=True)
    model = ClassFromRed(classes)
    export_cityscapes(model, ds, tmp_path / "pred")
    rc, printed, err = _official_eval(capsys, "--gt", tmp_path / "cs", "--predictions",
                                      tmp_path / "pred", "--classes", classes)
    assert rc == 0, err
    ours = evaluate(model, _loader(ds), classes, convention="official")
    assert printed["miou"] == pytest.approx(ours["miou"])
    assert list(printed["iou"]) == list(ds.class_set.names)
    for got, want in zip(printed["iou"].values(), ours["iou"], strict=True):
        assert (got is None and math.isnan(want)) or got == pytest.approx(want)
    assert printed["images"] == 2 and printed["convention"] == "official"
    assert "iiou" not in printed   # no instanceIds files: no instance-level score


def test_official_eval_scores_instances_under_numpy_2(tmp_path, capsys):
    pytest.importorskip("cityscapesscripts")
    gt_ids, _ = cityscapes_val_for_scoring(tmp_path / "cs")
    for i, gt in enumerate(gt_ids):    # each car pixel its own instance, as 26000 + k
        instances = np.where(gt == 26, 26000 + np.arange(gt.size).reshape(gt.shape), gt)
        Image.fromarray(instances.astype(np.uint16)).save(     # 16-bit, as Cityscapes' are
            tmp_path / f"cs/gtFine/val/aachen/aachen_{i:06d}_000019_gtFine_instanceIds.png")
    export_cityscapes(ClassFromRed(19), cityscapes(tmp_path / "cs", "val", size=None),
                      tmp_path / "pred")
    rc, printed, err = _official_eval(capsys, "--gt", tmp_path / "cs", "--predictions",
                                      tmp_path / "pred")
    assert rc == 0, err    # cityscapesscripts calls np.in1d, which NumPy 2.4 lacks
    assert 0 <= printed["iiou"] <= 100


def test_official_eval_names_a_ground_truth_file_without_prediction(tmp_path, capsys):
    pytest.importorskip("cityscapesscripts")
    cityscapes_val_for_scoring(tmp_path / "cs")
    [first, _] = export_cityscapes(ClassFromRed(19), cityscapes(tmp_path / "cs", "val",
                                                                size=None), tmp_path / "pred")
    first.unlink()
    rc, _, err = _official_eval(capsys, "--gt", tmp_path / "cs", "--predictions",
                                tmp_path / "pred")
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "no prediction for 1 of 2" in err and "aachen_000000_000019_gtFine_labelIds" in err


def test_official_eval_without_cityscapesscripts_says_what_to_install(tmp_path, capsys,
                                                                     monkeypatch):
    monkeypatch.setitem(sys.modules, "cityscapesscripts", None)
    monkeypatch.setitem(sys.modules, "cityscapesscripts.evaluation", None)
    rc, _, err = _official_eval(capsys, "--gt", tmp_path, "--predictions", tmp_path)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "pip install -e '.[official]'" in err
