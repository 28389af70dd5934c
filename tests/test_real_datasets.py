"""The GTA5, SYNTHIA and Cityscapes readers on tiny fixtures written here in the exact on-disk
formats, and every broken-fixture case with an error that names the file."""

import json

import numpy as np
import pytest
from PIL import Image
from real_trees import H, W
from real_trees import palette_label as _palette_label
from real_trees import rgb as _rgb

from wsda_lib.data import open_dataset
from wsda_lib.data.cityscapes import cityscapes
from wsda_lib.data.classes import CITYSCAPES_LABEL_TO_TRAIN, SYNTHIA_TO_TRAIN, protocol
from wsda_lib.data.files import DatasetError
from wsda_lib.data.gta5 import gta5
from wsda_lib.data.synthia import synthia

cv2 = pytest.importorskip("cv2")


def _synthia_label(path, ids, dtype=np.uint16):
    path.parent.mkdir(parents=True, exist_ok=True)
    red = np.resize(np.asarray(ids, dtype), (H, W))
    bgr = np.stack([np.zeros_like(red), np.full_like(red, 7), red], axis=2)  # id in red
    cv2.imwrite(str(path), bgr)


def test_gta5_reads_palette_indices_as_ids(gta_root):
    ds = gta5(gta_root, size=None)
    item = ds[0]
    assert len(ds) == 3 and item["image"].shape == (3, H, W)
    # 7 road -> 0, 8 sidewalk -> 1, 26 car -> 13, 0 and 1 (void) -> 255, 33 bicycle -> 18
    assert item["label"][0, :6].tolist() == [0, 1, 13, 255, 18, 255]
    assert ds.class_set.num_classes == 19
    # A reader opened without typical areas has no image-level labels, and says so.
    assert "weak_label" not in item
    with pytest.raises(ValueError, match="without typical_area"):
        ds.weak_label(0)


def test_image_level_labels_use_the_typical_areas_given_at_construction(gta_root):
    label = gta5(gta_root, size=None).label(0)
    share = (label[None] == np.arange(19)[:, None, None]).sum((1, 2)) / label.size
    typical = np.full(19, 0.5)
    typical[13] = 10 * share[13] * 1.01    # car: its share is just under 10% of this area
    ds = gta5(gta_root, size=None, typical_area=typical)
    weak = ds[0]["weak_label"]
    assert weak[13] == 0 and ds.weak_label(0)[13] == 0
    assert weak.tolist() == ds.weak_labels[0].tolist()
    assert weak[[0, 1]].tolist() == [float(share[0] > 0.05), float(share[1] > 0.05)]


def test_gta5_resizes_labels_by_nearest_neighbour(gta_root):
    item = gta5(gta_root, size=(24, 16))[0]
    assert item["image"].shape == (3, 16, 24)
    assert set(item["label"].unique().tolist()) <= {0, 1, 13, 18, 255}


def test_gta5_size_mismatch_is_reported_not_fatal(gta_root):
    _rgb(gta_root / "images/00001.png", h=H + 2)
    with pytest.warns(UserWarning, match="00001.png"):
        ds = gta5(gta_root, size=None)
    assert len(ds) == 2
    assert "00001.png" in str(ds.check())


def test_synthia_16_and_13_classes(tmp_path):
    _rgb(tmp_path / "RGB/0000000.png")
    _synthia_label(tmp_path / "GT/LABELS/0000000.png", [3, 4, 16, 21, 8, 0, 22, 300 % 256])
    with pytest.raises(ValueError, match="unknown synthia label ids"):
        synthia(tmp_path, size=None)[0]  # 44 is no SYNTHIA id
    _synthia_label(tmp_path / "GT/LABELS/0000000.png", [3, 4, 16, 21, 8, 0, 22, 10])
    s16, s13 = synthia(tmp_path, size=None, num_classes=16), synthia(tmp_path, size=None,
                                                                      num_classes=13)
    names16 = s16.class_set.names
    # road, sidewalk, terrain (dropped in 16), wall, car, void, void, person
    expected16 = [0, 1, 255, names16.index("wall"), names16.index("car"), 255, 255,
                  names16.index("person")]
    assert s16[0]["label"][0, :8].tolist() == expected16
    names13 = s13.class_set.names
    assert s13[0]["label"][0, 3].item() == 255  # wall is not in the 13 classes
    assert s13[0]["label"][0, 4].item() == names13.index("car") and len(names13) == 13


def test_synthia_8bit_label_is_refused_by_name(tmp_path):
    _rgb(tmp_path / "RGB/0000001.png")
    _synthia_label(tmp_path / "GT/LABELS/0000001.png", [3, 4], dtype=np.uint8)
    with pytest.raises(DatasetError, match="0000001.png: expected a 16-bit"):
        synthia(tmp_path, size=None)[0]


def test_cityscapes_layout(tmp_path):
    for city, n in (("aachen", 2), ("bremen", 1)):
        for i in range(n):
            stem = f"{city}_{i:06d}_000019"
            _rgb(tmp_path / f"leftImg8bit/val/{city}/{stem}_leftImg8bit.png")
            lb = tmp_path / f"gtFine/val/{city}/{stem}_gtFine_labelIds.png"
            lb.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.resize(np.array([7, 24, 23, 3], np.uint8), (H, W))).save(lb)
    ds = cityscapes(tmp_path, "val", size=None)
    assert len(ds) == 3 and ds[0]["label"][0, :4].tolist() == [0, 11, 10, 255]
    assert open_dataset("cityscapes", tmp_path, split="val", size=None).check().ok


def test_missing_label_file_is_named(gta_root):
    (gta_root / "labels/00002.png").unlink()
    with pytest.raises(DatasetError, match="00002.png"):
        gta5(gta_root)


def test_unreadable_image_is_named(gta_root):
    (gta_root / "images/00000.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="00000.png: unreadable image"):
        gta5(gta_root)
    report = gta5(gta_root, check_sizes=False).check()
    assert not report.ok and "00000.png" in str(report)


def test_unknown_label_ids_are_named(gta_root):
    _palette_label(gta_root / "labels/00001.png", [7, 200])
    with pytest.raises(ValueError, match=r"00001.png: unknown cityscapes label ids \[200\]"):
        gta5(gta_root, size=None)[1]
    report = gta5(gta_root, size=None).check()
    assert report.problems["unknown label ids"][0].count("00001.png") == 1


def test_rgb_label_is_refused(gta_root):
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(gta_root / "labels/00000.png")
    with pytest.raises(DatasetError, match="not colours"):
        gta5(gta_root, size=None)[0]


def test_empty_split_is_named(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        gta5(tmp_path)
    with pytest.raises(DatasetError, match="no leftImg8bit/val"):
        cityscapes(tmp_path, "val")


def test_protocol_tables_match_the_paper():
    assert len(CITYSCAPES_LABEL_TO_TRAIN) == 19 and sorted(CITYSCAPES_LABEL_TO_TRAIN.values()) \
        == list(range(19))
    assert len(SYNTHIA_TO_TRAIN) == 19 and sorted(SYNTHIA_TO_TRAIN.values()) == list(range(19))
    assert [protocol(n).class_set.num_classes for n in (19, 16, 13)] == [19, 16, 13]
    assert "terrain" not in protocol(16).class_set.names
    assert not {"wall", "fence", "pole"} & set(protocol(13).class_set.names)
    with pytest.raises(ValueError, match="19, 16 or 13"):
        protocol(10)


# docs/method.md §8, as a table: (section, field) -> value, for both paper presets.
PAPER_TABLE = {
    ("train", "batch_size"): 1, ("train", "optimizer"): "sgd", ("train", "lr"): 2.5e-4,
    ("train", "momentum"): 0.9, ("train", "weight_decay"): 5e-4, ("train", "head_lr_mult"): 10.0,
    ("train", "poly_power"): 0.9, ("train", "poly_horizon"): 250_000,
    ("train", "iterations"): 120_000, ("adapt", "iterations"): 120_000,
    ("adapt", "lr"): 2.5e-4, ("adapt", "disc_lr"): 1e-4, ("adapt", "lambda_adv"): 0.001,
    ("adapt", "lambda_c"): 0.01, ("adapt", "lambda_c_human"): 0.2, ("adapt", "lambda_cw"): 0.001,
    ("adapt", "pseudo_threshold"): 0.2, ("adapt", "smooth_max_r"): 1.0,
    ("adapt", "weak_dropout"): 0.1, ("adapt", "output_disc_width"): 64,
    ("model", "backbone"): "resnet101", ("model", "aspp_rates"): (6, 12, 18, 24),
    ("data", "target_size"): (1024, 512),
}


@pytest.mark.parametrize("name,source,size,classes", [
    ("paper_gta5", "gta5", (1280, 720), 19), ("paper_synthia", "synthia", (1280, 760), 16)])
def test_paper_presets_equal_the_paper_field_by_field(name, source, size, classes):
    from wsda_lib.core.config import preset

    cfg = preset(name)
    for (section, key), value in PAPER_TABLE.items():
        assert getattr(getattr(cfg, section), key) == value, (section, key)
    assert (cfg.data.dataset, cfg.data.source_size, cfg.data.class_protocol) == (source, size,
                                                                              classes)


def test_data_check_cli_reports_by_name_and_exits_non_zero(gta_root, capsys):
    from wsda_lib.cli import main

    assert main(["data", "check", "--dataset", "gta5", "--root", str(gta_root)]) == 0
    assert "no problems" in capsys.readouterr().out
    _palette_label(gta_root / "labels/00002.png", [7, 99])
    assert main(["data", "check", "--dataset", "gta5", "--root", str(gta_root)]) == 1
    out = capsys.readouterr().out
    assert "unknown label ids: 1" in out and "00002.png" in out
    (gta_root / "labels/00001.png").unlink()
    assert main(["data", "check", "--dataset", "gta5", "--root", str(gta_root)]) == 1
    out = capsys.readouterr().out
    assert "image without label file: 1" in out and "00001.png" in out


def test_full_resolution_evaluation_and_cityscapes_export(tmp_path):
    import torch

    from wsda_lib.models import build_deeplab
    from wsda_lib.records.export import export_cityscapes
    from wsda_lib.training.evaluate import evaluate

    stem = "aachen_000000_000019"
    _rgb(tmp_path / f"leftImg8bit/val/aachen/{stem}_leftImg8bit.png", h=32, w=64)
    lb = tmp_path / f"gtFine/val/aachen/{stem}_gtFine_labelIds.png"
    lb.parent.mkdir(parents=True)
    Image.fromarray(np.full((32, 64), 7, np.uint8)).save(lb)  # all road
    ds = cityscapes(tmp_path, "val", size=(32, 16), resize_labels=False)
    item = ds[0]
    assert item["image"].shape == (3, 16, 32) and item["label"].shape == (32, 64)
    torch.manual_seed(0)
    model = build_deeplab(19, "slim", base_width=4)
    with torch.no_grad():  # a model that always says "road"
        model.classifier.branches[0].bias.copy_(torch.tensor([10.0] + [0.0] * 18))
    scores = evaluate(model, torch.utils.data.DataLoader(ds), 19)
    assert scores["iou"][0] == 100 and scores["miou"] == 100
    [path] = export_cityscapes(model, ds, tmp_path / "pred")
    assert path.name == f"{stem}_leftImg8bit.png"
    exported = np.asarray(Image.open(path))
    assert exported.shape == (32, 64) and (exported == 7).all()  # trainId 0 -> labelId 7


def test_wsda_train_runs_a_paper_preset_on_tiny_real_trees(tmp_path, capsys):
    """`wsda train --preset paper_gta5` end to end on fixture trees, with a slim network."""
    from wsda_lib.cli import main

    src, tgt = tmp_path / "gta5", tmp_path / "cityscapes"
    rng = np.random.default_rng(0)
    for i in range(5):
        _rgb(src / f"images/{i:05d}.png", h=32, w=64)
        _palette_label(src / f"labels/{i:05d}.png", rng.choice([7, 8, 11, 21, 23, 26], 6),
                       h=32, w=64)
    for split, n in (("train", 5), ("val", 2)):
        for i in range(n):
            stem = f"aachen_{i:06d}_000019"
            _rgb(tgt / f"leftImg8bit/{split}/aachen/{stem}_leftImg8bit.png", h=32, w=64)
            lb = tgt / f"gtFine/{split}/aachen/{stem}_gtFine_labelIds.png"
            lb.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.resize(rng.choice([7, 8, 21, 23, 26], 6).astype(np.uint8),
                                      (32, 64))).save(lb)
    tiny = ["model.backbone='slim'", "model.base_width=4", "model.aspp_rates=(1, 2)",
            "train.iterations=2", "adapt.iterations=2", "train.eval_every=100",
            "data.source_size=(96, 48)", "data.target_size=(64, 32)", "data.val_count=1",
            "adapt.output_disc_width=4"]
    args = ["train", "--preset", "paper_gta5", "--source-root", str(src), "--target-root",
            str(tgt), "--run-dir", str(tmp_path / "runs"), "--device", "cpu", "--set", *tiny]
    assert main([*args, "--stage", "uda_pixel"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert all(0 <= out[s] <= 100 for s in ("source_val", "target_val", "target_test"))
    checkpoints = sorted((tmp_path / "runs/models").glob("uda_pixel-*/checkpoint.pt"))
    assert len(checkpoints) == 1 and len(list((tmp_path / "runs/models").iterdir())) == 2
    assert main(["evaluate", "--checkpoint", str(checkpoints[0]), "--run-dir",
                 str(tmp_path / "runs"), "--device", "cpu"]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["target_test"]["miou"] == out["target_test"]
    # Points are drawn per image as it is read (tests/test_real_points_self_training.py).
    assert main([*args, "--stage", "wda_point"]) == 0
    capsys.readouterr()
    assert main(["train", "--preset", "paper_gta5", "--run-dir", str(tmp_path)]) == 2
    assert "--source-root" in capsys.readouterr().err
