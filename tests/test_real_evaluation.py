"""Issue 11, "a day-long run is safe": the checker reports every file, typical areas are keyed
by protocol, size and files, predictions are exported and scored at the labels' native
resolution, the 16/13-class protocols can be scored in the official cityscapesscripts
convention, and a size-mismatched evaluation pair is never dropped from a score silently.

Fixtures are tiny trees in the exact on-disk formats, written here."""

import math
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
    gray_label,
    gta5_to,
    synthia_label,
    synthia_tree,
)
from real_trees import palette_label as _palette_label
from real_trees import rgb as _rgb

from wsda_lib.core.config import DataConfig
from wsda_lib.data import load, open_dataset
from wsda_lib.data.cityscapes import cityscapes
from wsda_lib.data.classes import CITYSCAPES_19, CITYSCAPES_LABEL_TO_TRAIN, protocol
from wsda_lib.data.files import DatasetError
from wsda_lib.data.gta5 import gta5
from wsda_lib.data.readers import check_dataset
from wsda_lib.data.weak_labels import class_pixel_counts, typical_areas
from wsda_lib.records.export import export_cityscapes
from wsda_lib.training.evaluate import evaluate, scores

cv2 = pytest.importorskip("cv2")


def _truncate(path, keep):
    path.write_bytes(path.read_bytes()[:keep])


# ---------------------------------------------------------------------------------------------
# A. The checker reads every file or reports it with the reason.

def test_check_reports_image_without_label_and_files_without_a_pair(gta_root):
    (gta_root / "labels/00002.png").unlink()
    _palette_label(gta_root / "labels/00077.png", [7])       # a label with no image
    (gta_root / "images/readme.txt").write_text("not an image")
    (gta_root / "images/00005.jpg").write_bytes(b"")          # not a .png: never read
    with pytest.raises(DatasetError, match="00002.png"), \
            pytest.warns(UserWarning, match="00077.png"):    # training still refuses
        gta5(gta_root)
    report = open_dataset("gta5", gta_root, size=None, checking=True).check()
    assert report.problems["image without label file"] == [
        f"{gta_root / 'images/00002.png'}: no label file {gta_root / 'labels/00002.png'}"]
    assert [m.split(":")[0] for m in report.problems["label file without image"]] == [
        str(gta_root / "labels/00077.png")]
    unused = report.problems["file not read"]
    assert any("readme.txt" in m for m in unused) and any("00005.jpg" in m for m in unused)
    assert report.checked == 2 and "00077.png" in check_dataset("gta5", gta_root)


def test_check_reports_stray_cityscapes_and_synthia_files_but_not_companion_files(tmp_path):
    root = cityscapes_tree(tmp_path / "cs", splits=(("val", 2),))
    folder = root / "gtFine/val/aachen"
    for suffix in ("color.png", "instanceIds.png", "labelTrainIds.png", "polygons.json"):
        (folder / f"aachen_000000_000019_gtFine_{suffix}").write_bytes(b"x")
    gray_label(folder / "aachen_000099_000019_gtFine_labelIds.png", [7])
    report = cityscapes(root, "val", size=None, checking=True).check()
    assert list(report.problems) == ["label file without image"]
    assert "aachen_000099_000019_gtFine_labelIds.png" in report.problems[
        "label file without image"][0]

    syn = tmp_path / "synthia"
    _rgb(syn / "RGB/0000000.png")
    synthia_label(syn / "GT/LABELS/0000000.png", [3, 4])
    synthia_label(syn / "GT/LABELS/0000009.png", [3, 4])
    report = open_dataset("synthia", syn, size=None, checking=True).check()
    assert "0000009.png" in report.problems["label file without image"][0]


@pytest.mark.parametrize("kind,write", [
    ("16-bit RGB", lambda p: cv2.imwrite(str(p), np.full((H, W, 3), 300, np.uint16))),
    ("16-bit grey", lambda p: cv2.imwrite(str(p), np.full((H, W), 300, np.uint16))),
    ("2-channel", lambda p: Image.fromarray(np.zeros((H, W, 2), np.uint8), "LA").save(p)),
    ("CMYK", lambda p: Image.new("CMYK", (W, H)).save(p, format="TIFF")),
    ("grey", lambda p: Image.new("L", (W, H)).save(p)),
])
def test_unsupported_image_format_is_refused_by_name(gta_root, kind, write):
    write(gta_root / "images/00001.png")
    with pytest.raises(DatasetError, match="00001.png: unsupported image"):
        gta5(gta_root, size=None)[1]
    report = gta5(gta_root, size=None, checking=True).check()
    assert list(report.problems) == ["unsupported image format"], kind
    assert "00001.png" in report.problems["unsupported image format"][0]


def test_rgba_and_palette_images_are_read_as_their_colours(gta_root):
    rgb = np.random.default_rng(3).integers(0, 255, (H, W, 3), np.uint8)
    Image.fromarray(np.dstack([rgb, np.full((H, W), 9, np.uint8)]), "RGBA").save(
        gta_root / "images/00000.png")
    item = gta5(gta_root, size=None)[0]
    assert (item["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8).tolist() \
        == rgb.tolist()


@pytest.mark.parametrize("write", [
    lambda p: cv2.imwrite(str(p), np.full((H, W), 7, np.uint16)),     # 'I;16': ids fit, 16 bits
    lambda p: Image.fromarray(np.full((H, W), 7, np.int32)).save(p, format="TIFF"),  # 32-bit
    lambda p: Image.new("1", (W, H)).save(p),
])
def test_label_that_is_not_8_bit_ids_is_refused_by_name(gta_root, write):
    write(gta_root / "labels/00002.png")
    with pytest.raises(DatasetError, match="00002.png: unsupported label"):
        gta5(gta_root, size=None)[2]
    report = gta5(gta_root, size=None, checking=True).check()
    assert list(report.problems) == ["unsupported label format"]


def test_truncated_label_is_listed_under_its_kind_and_the_check_goes_on(gta_root):
    _truncate(gta_root / "labels/00000.png", 20)     # the header itself is cut
    _truncate(gta_root / "labels/00001.png", 60)     # header intact, pixels cut
    _palette_label(gta_root / "labels/00002.png", [7, 200])  # another problem, still found
    with pytest.raises(DatasetError, match="00000.png: unreadable label file"):
        gta5(gta_root)
    report = gta5(gta_root, size=None, checking=True).check()
    unreadable = report.problems["unreadable label file"]
    assert [m.split(":")[0] for m in unreadable] == [str(gta_root / "labels/00000.png"),
                                                    str(gta_root / "labels/00001.png")]
    assert "unreadable image file" not in report.problems
    assert "00002.png" in report.problems["unknown label ids"][0] and report.checked == 3


def test_truncated_image_is_listed_as_an_image(gta_root):
    _truncate(gta_root / "images/00001.png", 60)
    report = gta5(gta_root, size=None, checking=True).check()
    assert list(report.problems) == ["unreadable image file"]
    assert "images/00001.png" in report.problems["unreadable image file"][0]


# ---------------------------------------------------------------------------------------------
# B. Typical class areas are keyed by protocol, size and files.


def test_16_then_13_synthia_classes_share_one_cache_dir(tmp_path):
    src, tgt = synthia_tree(tmp_path / "synthia"), cityscapes_tree(tmp_path / "cs")
    cfg = dict(dataset="synthia", source_root=str(src), target_root=str(tgt), val_count=1,
               source_size=(24, 16), target_size=(W, H))
    for classes in (16, 13, 16):
        bench = load(DataConfig(class_protocol=classes, **cfg), tmp_path / "cache")
        assert bench.typical_area.shape == (classes,)
        assert bench["target_test"].weak_labels.shape == (2, classes)
        fresh = load(DataConfig(class_protocol=classes, **cfg), tmp_path / f"fresh{classes}")
        assert bench.typical_area.tolist() == fresh.typical_area.tolist()


def test_source_size_change_measures_areas_again(tmp_path, gta_root):
    tgt = cityscapes_tree(tmp_path / "cs")
    # one image with a small car: its share depends on the size the labels are resized to
    ids = np.full((40, 60), 7, np.uint8)
    ids[:3, :6] = 26
    for i in range(3):
        _rgb(gta_root / f"images/{i:05d}.png", h=40, w=60)
        Image.fromarray(ids, "P").save(gta_root / f"labels/{i:05d}.png")
    cfg = dict(dataset="gta5", source_root=str(gta_root), target_root=str(tgt), val_count=1,
               target_size=(W, H), class_protocol=19)
    for size in ((60, 40), (15, 10), (60, 40)):
        bench = load(DataConfig(source_size=size, **cfg), tmp_path / "cache")
        labels = np.stack([bench["source_train"].label(i) for i in range(2)])
        expected = typical_areas(class_pixel_counts(labels, 19), labels[0].size)
        assert bench.typical_area.tolist() == pytest.approx(expected.tolist()), size


def test_rewritten_label_file_measures_areas_again(tmp_path, gta_root):
    tgt = cityscapes_tree(tmp_path / "cs")
    cfg = gta5_to(tgt, gta_root)
    before = load(cfg, tmp_path / "cache").typical_area
    for i in range(3):   # same names, other contents: the car covers every pixel now
        _palette_label(gta_root / f"labels/{i:05d}.png", [26])
    after = load(cfg, tmp_path / "cache").typical_area
    assert after[13] == 1.0 and before[13] != 1.0


# ---------------------------------------------------------------------------------------------
# C and D. Export and evaluation at the labels' native resolution.


def test_export_writes_the_ground_truths_native_resolution_whatever_the_resize(tmp_path):
    root = cityscapes_tree(tmp_path, splits=(("val", 1),), h=32, w=64)
    model = ClassFromRed(19)
    for ds in (cityscapes(root, "val", size=(32, 16), resize_labels=True),  # labels resized
               cityscapes(root, "val", size=(32, 16), resize_labels=False),
               cityscapes(root, "val", size=None)):
        [path] = export_cityscapes(model, ds, tmp_path / "pred")
        with Image.open(path) as im:
            assert im.size == (64, 32)


def test_real_target_evaluation_splits_keep_native_labels(tmp_path, gta_root):
    tgt = cityscapes_tree(tmp_path / "cs", h=32, w=64)
    bench = load(DataConfig(dataset="gta5", source_root=str(gta_root), target_root=str(tgt),
                            val_count=1, source_size=(6, 4), target_size=(16, 8),
                            class_protocol=19), tmp_path / "cache")
    assert bench["target_train"][0]["label"].shape == (8, 16)
    for split in ("target_val", "target_test"):
        item = bench[split][0]
        assert item["image"].shape == (3, 8, 16) and item["label"].shape == (32, 64)
        result = evaluate(ClassFromRed(19), torch.utils.data.DataLoader(bench[split]), 19)
        assert np.sum(result["confusion"]) == 32 * 64 * len(bench[split])  # every pixel


# ---------------------------------------------------------------------------------------------
# E. The project's and the official convention for the 16- and 13-class protocols.

def test_official_convention_by_hand():
    conf = np.array([[3, 1], [0, 2]])
    outside = np.array([2, 1])   # GT of a dropped class predicted as class 0 (2x), 1 (1x)
    project, official = scores(conf), scores(conf, outside=outside)
    assert project["iou"] == pytest.approx([75, 200 / 3])   # 3/(3+1), 2/(2+1)
    # the dropped-class pixels are false positives of what was predicted there
    assert official["iou"] == pytest.approx([50, 50])       # 3/(3+1+2), 2/(2+1+1)
    assert official["miou"] == pytest.approx(50)
    assert official["pixel_acc"] == pytest.approx(100 * 5 / 9)
    assert project["pixel_acc"] == pytest.approx(100 * 5 / 6)
    with pytest.raises(ValueError, match="outside"):
        scores(conf, outside=np.array([1, 2, 3]))


@pytest.mark.parametrize("classes", [16, 13])
def test_official_convention_counts_dropped_class_pixels_by_hand(tmp_path, classes):
    gt_ids, pred = cityscapes_val_for_scoring(tmp_path)
    pred = pred % classes
    ds = cityscapes(tmp_path, "val", size=None, num_classes=classes, mark_outside=True)
    # ClassFromRed predicts red // 10; keep predictions within the protocol
    model = ClassFromRed(classes)
    result = evaluate(model, torch.utils.data.DataLoader(ds, batch_size=2), classes,
                      convention="official")
    names = protocol(classes).class_set.names
    train = np.vectorize(lambda x: CITYSCAPES_LABEL_TO_TRAIN.get(int(x), 255))(gt_ids)
    gt_names = np.vectorize(lambda t: CITYSCAPES_19.names[t] if t != 255 else "")(train)
    for c, name in enumerate(names):
        tp = ((gt_names == name) & (pred == c)).sum()
        fn = ((gt_names == name) & (pred != c)).sum()
        fp = ((gt_names != name) & (gt_names != "") & (pred == c)).sum()  # dropped GT counts
        expected = 100 * tp / (tp + fp + fn) if tp + fp + fn else math.nan
        assert result["iou"][c] == pytest.approx(expected, nan_ok=True), name
    assert result["convention"] == "official"
    project = evaluate(model, torch.utils.data.DataLoader(ds, batch_size=2), classes)
    assert project["convention"] == "project" and project["miou"] > result["miou"]


def test_official_convention_needs_labels_that_mark_dropped_classes(tmp_path):
    cityscapes_val_for_scoring(tmp_path)
    ds = cityscapes(tmp_path, "val", size=None, num_classes=16)
    with pytest.raises(ValueError, match="mark_outside"):
        evaluate(ClassFromRed(16), torch.utils.data.DataLoader(ds), 16, convention="official")
    with pytest.raises(ValueError, match="convention"):
        evaluate(ClassFromRed(16), torch.utils.data.DataLoader(ds), 16, convention="paper")


@pytest.mark.parametrize("classes", [19, 16, 13])
def test_conventions_equal_cityscapesscripts(tmp_path, classes):
    csv = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    gt_ids, _ = cityscapes_val_for_scoring(tmp_path / "cs")
    model = ClassFromRed(classes)

    def official_miou(gt_root):
        ds = cityscapes(gt_root, "val", size=None, num_classes=classes)
        preds = export_cityscapes(model, ds, tmp_path / f"pred-{gt_root.name}")
        args = csv.args
        args.evalInstLevelScore, args.JSONOutput, args.quiet = False, False, True
        args.evalPixelAccuracy = False
        result = csv.evaluateImgLists([str(p) for p in preds],
                                      [str(lb) for _, lb in ds.pairs], args)
        per_class = result["classScores"]
        return 100 * np.nanmean([per_class[n] for n in ds.class_set.names])

    ds = cityscapes(tmp_path / "cs", "val", size=None, num_classes=classes, mark_outside=True)
    loader = torch.utils.data.DataLoader(ds)
    ours = evaluate(model, loader, classes, convention="official")
    assert ours["miou"] == pytest.approx(official_miou(tmp_path / "cs"))
    # The project's convention is the official one on ground truth where the classes the
    # protocol drops are void (labelId 0).
    dropped = [lid for lid, t in CITYSCAPES_LABEL_TO_TRAIN.items()
               if CITYSCAPES_19.names[t] not in ds.class_set.names]
    void = tmp_path / "void"
    for (image, label), gt in zip(ds.pairs, gt_ids, strict=True):
        rel = label.relative_to(tmp_path / "cs")
        gray_label(void / rel, np.where(np.isin(gt, dropped), 0, gt))
        target = void / image.relative_to(tmp_path / "cs")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(image.read_bytes())
    project = evaluate(model, loader, classes)
    assert project["miou"] == pytest.approx(official_miou(void))
    if classes == 19:
        assert project["miou"] == pytest.approx(ours["miou"])


# ---------------------------------------------------------------------------------------------
# F. A size-mismatched pair in a target evaluation split is never dropped silently.


def test_mismatched_evaluation_pair_is_refused_with_its_name(tmp_path, gta_root):
    tgt = cityscapes_tree(tmp_path / "cs")
    _rgb(tgt / "leftImg8bit/val/aachen/aachen_000001_000019_leftImg8bit.png", h=H + 2)
    cfg = gta5_to(tgt, gta_root)
    with pytest.raises(DatasetError, match="aachen_000001_000019.*wsda data check"):
        load(cfg, tmp_path / "cache")


def test_mismatched_training_pair_is_left_out_with_a_warning(tmp_path, gta_root):
    tgt = cityscapes_tree(tmp_path / "cs")
    _rgb(gta_root / "images/00000.png", h=H + 2)
    cfg = gta5_to(tgt, gta_root)
    with pytest.warns(UserWarning, match="00000.png"):
        bench = load(cfg, tmp_path / "cache")
    assert len(bench["source_train"]) == 1 and len(bench["source_val"]) == 1


def test_metrics_say_on_how_many_images_they_were_scored(tmp_path):
    root = cityscapes_tree(tmp_path, splits=(("val", 3),))
    model = ClassFromRed(19)
    full = evaluate(model, torch.utils.data.DataLoader(cityscapes(root, "val", size=None)), 19)
    assert full["images"] == 3 and full["images_total"] == 3
    assert full["scored_on"] == "3 of 3 images"
    _rgb(root / "leftImg8bit/val/aachen/aachen_000001_000019_leftImg8bit.png", h=H + 2)
    with warnings.catch_warnings():   # val refuses it by default; asked to leave it out here
        warnings.simplefilter("ignore")
        ds = cityscapes(root, "val", size=None, on_size_mismatch="leave out")
    part = evaluate(model, torch.utils.data.DataLoader(ds, batch_size=2), 19)
    assert part["images"] == 2 and part["images_total"] == 3
    assert part["scored_on"] == "2 of 3 images (1 left out: image/label sizes differ)"
