"""The point-label stage and the self-training round on the real data's splits, in bounded
memory: points drawn per image from its own label, pseudo labels written as PNGs and read back
per item, thresholds from batches; end to end with `wsda train --preset paper_gta5` on tiny
trees in the real on-disk formats."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from real_trees import point_trees

from wsda_lib.core.config import preset
from wsda_lib.data.cityscapes import cityscapes
from wsda_lib.data.splits import LabelFiles, WithItems
from wsda_lib.method.point_supervision import ItemPoints, image_points
from wsda_lib.method.self_training import ClassThresholds, class_thresholds
from wsda_lib.models import build_deeplab
from wsda_lib.training.pseudo_labels import (
    pseudo_label_file,
    pseudo_label_maps,
    write_pseudo_labels,
)

# --- class thresholds from batches --------------------------------------------------------

def _confidences(n=6, h=9, w=11, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    conf = torch.rand(n, h, w, generator=g) * 0.75 + 0.25
    pred = torch.randint(0, classes - 1, (n, h, w), generator=g)  # the last class never wins
    return conf, pred


@pytest.mark.parametrize("quantile,cap", [(0.5, 0.9), (0.0, 0.9), (1.0, 1.0), (0.3, 0.6)])
def test_thresholds_from_batches_equal_the_in_memory_ones(quantile, cap):
    conf, pred = _confidences()
    expected = class_thresholds(conf, pred, 4, quantile, cap)
    exact, histogram, switched = (ClassThresholds(4, budget) for budget in (10 ** 9, 0, 200))
    for i in range(0, len(conf), 2):  # three batches of two images
        for stats in (exact, histogram, switched):
            stats.add(conf[i:i + 2], pred[i:i + 2])
    assert exact.exact and not histogram.exact and not switched.exact
    # Within the budget: the very same values, hence the same thresholds to the bit.
    assert torch.equal(exact.thresholds(quantile, cap), expected)
    # Past it: histograms of 2^16 bins, off by less than a bin; never-predicted classes: cap.
    for stats in (histogram, switched):
        got = stats.thresholds(quantile, cap)
        assert torch.allclose(got, expected, rtol=0, atol=1 / 2 ** 16)
        assert got[3] == cap
    with pytest.raises(ValueError, match="quantile"):
        exact.thresholds(1.5)


def test_histogram_thresholds_are_close_on_many_pixels():
    g = torch.Generator().manual_seed(1)
    conf = torch.rand(400, 64, 64, generator=g) ** 0.3          # skewed towards 1
    pred = torch.randint(0, 19, conf.shape, generator=g)
    stats = ClassThresholds(19, exact_budget=0)
    for i in range(0, 400, 25):
        stats.add(conf[i:i + 25], pred[i:i + 25])
    expected = class_thresholds(conf, pred, 19, 0.5, 0.99)
    assert (stats.thresholds(0.5, 0.99) - expected).abs().max() < 2e-5


# --- pseudo labels on disk ----------------------------------------------------------------

def _model(num_classes, seed=0):
    torch.manual_seed(seed)
    model = build_deeplab(num_classes, "slim", base_width=4, aspp_rates=(1, 2))
    with torch.no_grad():   # a little confidence spread, so that thresholds matter
        for p in model.classifier.parameters():
            p.mul_(20)
    return model.eval()


def test_pseudo_labels_on_disk_equal_the_in_memory_maps(smoke_bench, tmp_path):
    """The embedded benchmark: the labels written (and read back per item) are
    pseudo_label_maps' "filtered" map, with the same thresholds and quality, to the bit."""
    split, adapt = smoke_bench["target_train"], preset("smoke").adapt
    model = _model(split.class_set.num_classes)
    maps = pseudo_label_maps(model, split, adapt, "cpu", batch_size=16)
    done = write_pseudo_labels(model, split, adapt, "cpu", tmp_path / "pl", batch_size=16)
    assert done["thresholds"] == maps["thresholds"] and done["quality"] == maps["quality"]
    assert done["exact_thresholds"]
    assert maps["quality"]["filtered"]["coverage"] < maps["quality"]["raw"]["coverage"]
    files = LabelFiles(len(split), lambda i: pseudo_label_file(tmp_path / "pl", i))
    assert np.array_equal(np.stack([files[i] for i in range(len(split))]), maps["filtered"])
    wrapped = WithItems(split, pseudo_label=files)
    assert torch.equal(wrapped[3]["pseudo_label"], torch.from_numpy(maps["filtered"][3]))
    # A few images labelled with the round's thresholds are the round's labels for them;
    # with their own thresholds they are not (fewer images, other medians).
    few = [0, 5, 9]
    again = pseudo_label_maps(model, split, adapt, "cpu", indices=few,
                              thresholds=done["thresholds"])
    assert again["thresholds"] == done["thresholds"]
    assert np.array_equal(again["filtered"], maps["filtered"][few])
    assert pseudo_label_maps(model, split, adapt, "cpu", indices=few)["thresholds"] != \
        done["thresholds"]
    # A folder with its record is reused as it is: no model is run.
    assert write_pseudo_labels(None, split, adapt, "cpu", tmp_path / "pl") == done


# --- points, per image --------------------------------------------------------------------

def _target_train(tgt, pairs=None, size=(48, 24)):
    full = cityscapes(tgt, "train", size=size, typical_area=np.full(19, 0.05))
    if pairs is not None:
        full.pairs = pairs(full.pairs)
    return full


def test_points_depend_on_the_image_alone(tmp_path):
    _, tgt = point_trees(tmp_path)
    split = _target_train(tgt)
    points = WithItems(split, points=ItemPoints(seed=3))
    by_name = {split.item_name(i): points[i]["points"] for i in range(len(split))}
    for i in range(len(split)):
        label, weak = split.label(i), split.weak_label(i)
        assert label.shape == (24, 48)                      # the training size's label
        p = by_name[split.item_name(i)].numpy()
        assert ((p >= 0) == (weak > 0)).all() and weak.sum() >= 2
        assert (label.reshape(-1)[p[p >= 0]] == np.flatnonzero(p >= 0)).all()
    # The same image has the same points in a reordered, smaller split ...
    other = _target_train(tgt, lambda pairs: pairs[::-1][:3])
    wrapped = WithItems(other, points=ItemPoints(seed=3))
    for i in range(len(other)):
        assert torch.equal(wrapped[i]["points"], by_name[other.item_name(i)])
    # Another seed clicks elsewhere.
    again = [image_points(split.label(i), split.weak_label(i), 4, split.item_name(i))
             for i in range(len(split))]
    assert any((a != b.numpy()).any() for a, b in zip(again, by_name.values(), strict=True))


# --- end to end ---------------------------------------------------------------------------

def test_point_and_self_training_stages_run_on_tiny_real_trees(tmp_path, capsys):
    from wsda_lib.cli import main

    src, tgt = point_trees(tmp_path)
    tiny = ["model.backbone='slim'", "model.base_width=4", "model.aspp_rates=(1, 2)",
            "train.iterations=2", "adapt.iterations=2", "train.eval_every=100",
            "data.source_size=(96, 48)", "data.target_size=(64, 32)", "data.val_count=1",
            "adapt.output_disc_width=4", "train.eval_batch_size=3"]
    args = ["train", "--preset", "paper_gta5", "--source-root", str(src), "--target-root",
            str(tgt), "--run-dir", str(tmp_path / "runs"), "--device", "cpu", "--set", *tiny]
    for stage in ("wda_point", "uda_self_training"):
        assert main([*args, "--stage", stage]) == 0, capsys.readouterr().err
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert all(0 <= out[s] <= 100 for s in ("source_val", "target_val", "target_test"))
    [folder] = [p for p in (tmp_path / "runs/data/pseudo_labels").iterdir() if p.is_dir()]
    pngs = sorted(folder.glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(4)]  # 5 train - 1 val
    for p in pngs:
        label = np.asarray(Image.open(p))
        assert label.dtype == np.uint8 and label.shape == (32, 64)
        assert set(np.unique(label)) <= set(range(19)) | {255}
    [run] = (tmp_path / "runs/models").glob("uda_self_training-*")
    metrics = json.loads((run / "metrics.json").read_text())
    [point_run] = (tmp_path / "runs/models").glob("wda_point-*")
    history = json.loads((point_run / "metrics.json").read_text())["history"]
    assert history["point"] and metrics["history"]["self_training"]  # the terms trained
    record = json.loads((folder / "pseudo_labels.json").read_text())
    assert metrics["thresholds"] == record["thresholds"] and len(record["thresholds"]) == 19
    assert metrics["pseudo_labels"] == record["quality"]
    assert set(record["quality"]) == {"raw", "confidence_only", "filtered"}
