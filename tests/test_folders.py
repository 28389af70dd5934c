"""Any two domains from folders (data.dataset = "folders", data/folders.py): each format the
reader accepts, each it refuses by name, and the round trip from the embedded benchmark to
folders and back, which trains the same weights."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsda_lib import data
from wsda_lib.core.config import override, preset
from wsda_lib.data.files import DatasetError, read_index_png
from wsda_lib.data.folders import (
    export_benchmark,
    open_folder_split,
    read_class_file,
    read_folder_image,
)

LABEL = np.array([[0, 0, 1, 1], [0, 2, 2, 1], [255, 2, 1, 1]], np.uint8)  # 3 x 4


def _domain(root: Path, split: str = "train", image_mode: str = "RGB", suffix: str = ".png",
            label: np.ndarray = LABEL, label_mode: str = "L") -> Path:
    """One image/label pair under root/img_dir/split and root/ann_dir/split."""
    (root / "img_dir" / split).mkdir(parents=True, exist_ok=True)
    (root / "ann_dir" / split).mkdir(parents=True, exist_ok=True)
    rgb = np.arange(3 * 4 * 3, dtype=np.uint8).reshape(3, 4, 3) * 7
    Image.fromarray(rgb).convert(image_mode).save(root / "img_dir" / split / f"a{suffix}")
    if label_mode == "P":
        im = Image.fromarray(label, "P")
        im.putpalette([200, 0, 0] * 256)  # every index the same colour: indices must be read
    else:
        im = Image.fromarray(label) if label.ndim == 3 else Image.fromarray(label, label_mode)
    im.save(root / "ann_dir" / split / "a.png")
    return root


def _classes(root: Path, **spec) -> Path:
    path = root / "classes.json"
    path.write_text(json.dumps({"classes": ["road", "car", "sky"], **spec}))
    return path


def _read(root, class_file):
    split = open_folder_split(root, "train", read_class_file(class_file), "x")
    return split.load(0)


def test_png_jpeg_and_grey_images_are_read_as_rgb(tmp_path):
    cls = _classes(tmp_path)
    image, label = _read(_domain(tmp_path / "png"), cls)
    assert image.shape == (3, 4, 3) and label.tolist() == LABEL.tolist()
    jpeg, _ = _read(_domain(tmp_path / "jpg", suffix=".jpg"), cls)
    assert jpeg.shape == (3, 4, 3) and np.abs(jpeg.astype(int) - image).mean() < 20  # lossy
    grey, _ = _read(_domain(tmp_path / "grey", image_mode="L"), cls)
    assert grey.shape == (3, 4, 3) and (grey[..., 0] == grey[..., 2]).all()


def test_palette_labels_are_read_as_indices_and_values_map_to_classes(tmp_path):
    image, label = _read(_domain(tmp_path / "p", label_mode="P"), _classes(tmp_path))
    assert label.tolist() == LABEL.tolist()  # the palette's colours are all red: not read
    stored = np.where(LABEL == 255, 0, LABEL + 10).astype(np.uint8)  # 10, 11, 12; 0 = ignore
    cls = _classes(tmp_path, values={"10": "road", "11": "car", "12": "sky"}, ignore=0)
    _, mapped = _read(_domain(tmp_path / "v", label=stored), cls)
    assert mapped.tolist() == LABEL.tolist()
    assert read_class_file(cls).to_stored(np.array([[0, 1, 2]])).tolist() == [[10, 11, 12]]


def test_colour_coded_labels_map_through_the_class_files_colours(tmp_path):
    colours = {(128, 64, 128): 0, (0, 0, 142): 1, (70, 130, 180): 2, (0, 0, 0): 255}
    rgb = np.zeros((3, 4, 3), np.uint8)
    for colour, k in colours.items():
        rgb[LABEL == k] = colour
    cls = _classes(tmp_path, colours={"128,64,128": "road", "0,0,142": "car",
                                      "70,130,180": "sky"}, ignore="0,0,0")
    _, label = _read(_domain(tmp_path / "c", label=rgb), cls)
    assert label.tolist() == LABEL.tolist()
    assert read_class_file(cls).to_stored(np.array([[1]])).tolist() == [[[0, 0, 142]]]


def test_a_16_bit_label_is_refused_by_name(tmp_path):
    root = _domain(tmp_path / "d")
    path = root / "ann_dir/train/a.png"
    Image.fromarray(LABEL.astype(np.uint16) * 300).save(path)
    with pytest.raises(DatasetError, match=f"{path}: unsupported label format"):
        _read(root, _classes(tmp_path))


def test_a_value_missing_from_the_class_file_is_refused_naming_both_files(tmp_path):
    root = _domain(tmp_path / "d", label=np.where(LABEL == 2, 7, LABEL).astype(np.uint8))
    cls = _classes(tmp_path)
    with pytest.raises(ValueError, match=rf"{root / 'ann_dir/train/a.png'}: unknown label "
                       rf"values \[7\], not in the class file {cls}"):
        _read(root, cls)


@pytest.mark.parametrize("spec, message", [
    ({"values": {"1": "bus"}}, "'1' maps to 'bus', which is not in \"classes\""),
    ({"values": {"300": "road"}}, "stored label value '300': expected an integer 0-255"),
    ({"values": {}, "colours": {}}, "not both"),
    ({"colours": {"1,2": "road"}}, "colour '1,2': expected 'r,g,b'"),
    ({"palette": [[0, 0, 0]]}, "\"palette\" has 1 colours for 3 classes"),
])
def test_a_bad_class_file_is_refused_by_name_and_field(tmp_path, spec, message):
    path = _classes(tmp_path, **spec)
    with pytest.raises(ValueError, match=f"{path}: .*{message}".replace("[", r"\[")):
        read_class_file(path)
    with pytest.raises(ValueError, match="class file is missing"):
        read_class_file(tmp_path / "none.json")


def test_a_missing_folder_and_a_stray_file_are_named(tmp_path):
    root = _domain(tmp_path / "d")
    with pytest.raises(DatasetError, match=f"{root / 'img_dir/val'}: folder is missing"):
        open_folder_split(root, "val", read_class_file(_classes(tmp_path)), "x")
    (root / "img_dir/train/notes.txt").write_text("x")
    (root / "ann_dir/train/b.png").write_bytes((root / "ann_dir/train/a.png").read_bytes())
    report = open_folder_split(root, "train", read_class_file(_classes(tmp_path)), "x",
                               checking=True).check()
    assert "notes.txt: not an image" in str(report) and "b.png" in str(report)


@pytest.mark.slow
def test_the_embedded_benchmark_round_trips_through_folders(tmp_path):
    """Exported to folders (PNG, lossless) and read back, every item of every split is the
    same tensor, the image-level labels included; a stage trained from either is the same
    weights. (Points are drawn per image for splits read from files, as for real data, so
    wda_point differs by design: data/folders.py.)"""
    from wsda_lib.cli import main

    cfg = preset("smoke")
    memory = data.load(cfg.data, tmp_path / "cache")
    counts = export_benchmark(memory, tmp_path / "export")
    assert counts == {s: len(memory[s]) for s in data.SPLIT_NAMES}
    with pytest.raises(FileExistsError, match="exists"):
        export_benchmark(memory, tmp_path / "export")
    folders = {"data.dataset": "folders", "data.source_root": str(tmp_path / "export/source"),
               "data.target_root": str(tmp_path / "export/target")}
    read = data.load(override(cfg, **folders).data, tmp_path / "cache2")
    for s in data.SPLIT_NAMES:
        a, b = memory[s], read[s]
        assert len(a) == len(b)
        for i in range(len(a)):
            assert all(torch.equal(a[i][k], b[i][k]) for k in ("image", "label", "weak_label"))
    weights = []
    for runs, extra in ((tmp_path / "r1", []),
                        (tmp_path / "r2", ["--set", *(f"{k}={v}" for k, v in folders.items())])):
        assert main(["train", "--preset", "smoke", "--stage", "uda_weak", "--run-dir",
                     str(runs), *extra]) == 0
        path = next(runs.glob("models/uda_weak-*/checkpoint.pt"))
        weights.append(torch.load(path, weights_only=False)["model"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_wsda_data_check_reports_each_folder_split_and_refuses_misplaced_options(
        tmp_path, capsys):
    from wsda_lib.cli import main

    root = _domain(tmp_path / "d", label=np.where(LABEL == 2, 9, LABEL).astype(np.uint8))
    _domain(root, split="val")
    cls = _classes(root)
    assert main(["data", "check", "--dataset", "folders", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"folders train at {root} (classes: {cls})" in out and "folders val" in out
    assert "unknown label ids: 1" in out and "unknown label values [9]" in out
    assert main(["data", "check", "--dataset", "gta5", "--root", str(root), "--class-file",
                 str(cls)]) == 2
    assert "--class-file" in capsys.readouterr().err
    assert main(["data", "export-embedded", str(root), "--preset", "smoke"]) == 2
    assert f"{root}: exists" in capsys.readouterr().err


# --- weak labels as a WDA user has them, ready-made class files, every stage on folders ---

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The smoke benchmark exported to folders, and a copy whose target train has no pixel
    labels (its weak labels only in the CSVs that export writes)."""
    from wsda_lib.data.folders import export_names
    from wsda_lib.method.point_supervision import split_points

    root = tmp_path_factory.mktemp("folders")
    memory = data.load(preset("smoke").data, root / "cache")
    target = memory["target_train"]
    export_benchmark(memory, root / "labelled", split_points(target, 0,
                                                             export_names(len(target))))
    import shutil

    shutil.copytree(root / "labelled", root / "tags")
    shutil.rmtree(root / "tags/target/ann_dir/train")
    return root


def _folders(root, csvs: bool = True) -> dict:
    cfg = {"data.dataset": "folders", "data.source_root": str(root / "source"),
           "data.target_root": str(root / "target")}
    if csvs:
        cfg.update({"data.image_labels": str(root / "target/image_labels.csv"),
                    "data.points": str(root / "target/points.csv")})
    return cfg


def test_image_labels_and_points_from_csv_agree_with_those_from_the_label_maps(exported,
                                                                                tmp_path):
    """The two routes to target train's weak labels give the same labels and clicks: derived
    from ann_dir/train (the paper's rule; points drawn per image) and read from the CSVs
    export wrote, with or without the label maps beside them."""
    from wsda_lib.method.point_supervision import ItemPoints

    cfg = preset("smoke")
    derived = data.load(override(cfg, **_folders(exported / "labelled", False)).data,
                        tmp_path)["target_train"]
    drawn = np.stack([ItemPoints(0)(derived[i]).numpy() for i in range(len(derived))])
    for copy in ("labelled", "tags"):
        read = data.load(override(cfg, **_folders(exported / copy)).data, tmp_path)
        target = read["target_train"]
        assert np.array_equal(target.weak_labels, derived.weak_labels)
        assert np.array_equal(target.points, drawn) and (drawn >= 0).sum() > len(drawn)
        assert torch.equal(target[3]["weak_label"], derived[3]["weak_label"])
    assert not target.has_pixel_labels and (target.label(0) == 255).all()


def test_points_are_scaled_to_the_training_size(tmp_path):
    """A click at column x, row y goes to the training-size pixel whose centre is nearest its
    centre: in a 4x3 image trained on at 8x6, (3, 1) -> column (2·3 + 1)·8 // 8 = 7, row
    (2·1 + 1)·6 // 6 = 3, flat 3·8 + 7 = 31; at 2x1, column 7·2 // 8 = 1, row 3 // 6 = 0."""
    from wsda_lib.data.tags import read_points

    csv = tmp_path / "points.csv"
    csv.write_text("\ufeffimage,class,x,y\na.png,car,3,1\n")  # Excel's UTF-8 mark
    points = read_points(csv, ["a.png"], ["road", "car"], [(4, 3)], (8, 6))
    assert points.tolist() == [[-1, 31]]
    assert read_points(csv, ["a.png"], ["road", "car"], [(4, 3)], (2, 1)).tolist() == [[-1, 1]]


@pytest.mark.parametrize("kind, text, message", [
    ("image_labels", "a.png,road\nb.png,car\n", "image 'b.png' is not in the split's folder"),
    ("image_labels", "a.png,tree\n", "class 'tree' is not in the class file"),
    ("image_labels", "a.png,road\na,car\n", "has a row already (line 1)"),
    ("image_labels", "# no rows\n", "1 image(s) of the split have no row"),
    ("points", "a.png,car,4,0\n", "point (4, 0) is outside the image 'a.png' of 4x3"),
    ("points", "a.png,car,1\n", "3 fields; expected image,class,x,y"),
    ("points", "a.png,car,one,0\n", "expected whole pixel coordinates"),
    ("points", "a.png,car,1,0\na.png,car,2,0\n", "has a 'car' point already (line 1)"),
    ("points", "z.png,car,1,0\n", "image 'z.png' is not in the split's folder"),
    ("points", "# clicks\nimage,class,x,y\na,car,1,0\n",
     "name(s) shared by two images, e.g. ['a.jpg', 'a.png'] ('a')"),
    ("image_labels", "image,class\n\xff\n", "not UTF-8 text"),
    ("image_labels", "image;class\na.png;road\n", "one cell holding ';'; the file looks "
                                                  "';'-separated"),
    ("points", "a.png\tcar\t1\t0\n", "looks tab-separated"),
])
def test_a_csv_mistake_is_refused_naming_the_file_line_and_field(tmp_path, kind, text, message):
    """Every mistake in the CSVs is refused when the data is loaded, before any training,
    naming the file, the line and the config field."""
    root = _domain(tmp_path / "t")
    _domain(root, "val"), _domain(root, "test")
    _domain(tmp_path / "s"), _domain(tmp_path / "s", "val")
    _classes(root)
    csv = tmp_path / f"{kind}.csv"
    csv.write_bytes(text.encode("latin-1") if "\xff" in text else text.encode())
    if "shared" in message:  # a second image of the same name but its extension
        Image.new("RGB", (4, 3)).save(root / "img_dir/train/a.jpg")
    cfg = override(preset("smoke"), **{"data.dataset": "folders", f"data.{kind}": str(csv),
                                       "data.source_root": str(tmp_path / "s"),
                                       "data.target_root": str(root)})
    with pytest.raises(ValueError, match=re.escape(message)) as e:
        data.load(cfg.data, tmp_path / "cache")
    if "shared" not in message:  # refused by the folder, before any CSV is read
        assert str(csv) in str(e.value) and f"(data.{kind})" in str(e.value)


def test_yaml_and_ready_made_class_files_read_as_the_library_protocols(tmp_path):
    """A YAML class file reads as its JSON twin; "cityscapes-19/16/13" map every Cityscapes
    labelId (0-33) as the GTA5/Cityscapes readers' protocols do, "cityscapes-19-trainids"
    maps trainIds to themselves."""
    import yaml

    from wsda_lib.data.classes import protocol

    spec = {"classes": ["road", "car"], "values": {"7": "road", "26": "car", "0": ""},
            "ignore": 255}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "c.json").write_text(json.dumps(spec))
    a, b = read_class_file(tmp_path / "c.yaml"), read_class_file(tmp_path / "c.json")
    assert a.values == b.values == {7: 0, 26: 1, 0: 255, 255: 255}
    ids = np.arange(34).reshape(2, 17)
    for n in (19, 16, 13):
        ready = read_class_file(f"cityscapes-{n}")
        assert ready.class_set.names == protocol(n).class_set.names
        assert np.array_equal(ready.map_label_ids(ids), protocol(n).map_label_ids(ids,
                                                                                  "cityscapes"))
    train_ids = read_class_file("cityscapes-19-trainids")
    assert train_ids.map_label_ids(np.arange(19)).tolist() == list(range(19))
    with pytest.raises(ValueError, match="no such ready-made class file"):
        data.folders.ready_made("cityscapes-20")


@pytest.mark.slow
def test_every_stage_trains_on_folders_whose_target_train_has_only_csv_labels(exported,
                                                                             capsys):
    """The whole series (smoke) on a folder pair whose target train holds images and the two
    CSVs only: every stage trains but the oracle, which is refused by name before training
    (it needs target train's pixel labels) and trains once they are there; self-training
    reports no pseudo-label quality, having nothing to measure it against."""
    from wsda_lib.cli import main
    from wsda_lib.stages import STAGES

    runs = exported / "runs"
    sets = [f"{k}={v}" for k, v in _folders(exported / "tags").items()]
    for name in STAGES:
        rc = main(["train", "--preset", "smoke", "--stage", name, "--run-dir", str(runs),
                   "--set", *sets])
        assert rc == (2 if name == "oracle" else 0), name
    assert "stage 'oracle' trains on target train's pixel labels" in capsys.readouterr().err
    metrics = json.loads(next(runs.glob("models/uda_self_training-*/metrics.json")).read_text())
    assert metrics["pseudo_labels"] == {} and metrics["pseudo_weak_start"]["precision"] > 0
    labelled = [f"{k}={v}" for k, v in _folders(exported / "labelled", False).items()]
    assert main(["train", "--preset", "smoke", "--stage", "oracle", "--run-dir", str(runs),
                 "--set", *labelled]) == 0


def test_predictions_are_exported_in_the_datasets_own_label_values(tmp_path):
    """export_predictions writes a folder dataset's stored values (index labels) or colours
    (colour labels), at the label file's size whatever size the images are read at: a model
    that always predicts "car" gives 11 where the class file stores car as 11, and car's
    colour where it is colour-coded."""
    from wsda_lib.records.export import export_predictions

    class Car(torch.nn.Module):
        def forward(self, x):
            zero = torch.zeros_like(x[:, :1])
            return torch.cat([zero, zero + 1, zero], 1), None

    stored = np.where(LABEL == 255, 0, LABEL + 10).astype(np.uint8)
    cls = _classes(tmp_path, values={"10": "road", "11": "car", "12": "sky"}, ignore=0)
    split = open_folder_split(_domain(tmp_path / "v", label=stored), "train",
                              read_class_file(cls), "target_test", size=(2, 1))
    path, = export_predictions(Car(), split, tmp_path / "out")  # read at 2x1, written 4x3
    assert np.asarray(Image.open(path)).tolist() == [[11] * 4] * 3
    rgb = np.zeros((3, 4, 3), np.uint8)
    colours = _classes(tmp_path, colours={"1,1,1": "road", "0,0,142": "car", "2,2,2": "sky"},
                       ignore="0,0,0")
    split = open_folder_split(_domain(tmp_path / "c", label=rgb), "train",
                              read_class_file(colours), "target_test")
    path, = export_predictions(Car(), split, tmp_path / "out2")
    assert (np.asarray(Image.open(path)) == [0, 0, 142]).all()


@pytest.mark.slow
def test_torchrun_trains_on_folders_and_evaluate_exports_the_predictions(exported, tmp_path):
    """WDA with points from the CSVs under torchrun (two processes): one checkpoint, whose
    `wsda evaluate` scores equal the run's own; `--export DIR` writes one label PNG per
    target test image in the class file's values (here the class indices) and refuses a
    folder that holds files."""
    import os
    import subprocess
    import sys

    sets = [f"{k}={v}" for k, v in _folders(exported / "tags").items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "wsda_lib.cli", "train", "--preset", "smoke", "--stage", "wda_point",
           "--run-dir", str(tmp_path), "--device", "cpu",
           "--set", "train.iterations=6", "adapt.iterations=4", *sets]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    reported = json.loads(done.stdout.strip().splitlines()[-1])
    checkpoint, = tmp_path.rglob("wda_point-*/checkpoint.pt")
    evaluate = [sys.executable, "-m", "wsda_lib.cli", "evaluate", "--checkpoint",
                str(checkpoint), "--run-dir", str(tmp_path), "--device", "cpu", "--export"]
    single = subprocess.run([*evaluate, str(tmp_path / "pred")], capture_output=True,
                            text=True, timeout=300, env=env)
    assert single.returncode == 0, single.stderr[-2000:]
    scores = json.loads(single.stdout.strip().splitlines()[-2])
    assert all(scores[s]["miou"] == reported[s] for s in ("target_val", "target_test"))
    written = sorted((tmp_path / "pred").iterdir())
    assert [p.name for p in written] == sorted(
        p.name for p in (exported / "tags/target/img_dir/test").iterdir())
    assert set(np.unique(np.asarray(Image.open(written[0])))) <= set(range(10))
    again = subprocess.run([*evaluate, str(tmp_path / "pred")], capture_output=True,
                           text=True, timeout=300, env=env)
    assert again.returncode == 2 and "the folder is not empty" in again.stderr


def _target_with(tmp_path, images=("a",), labelled=True):
    """A source and a target of 4x3 images `images`; target train labelled or not."""
    source, target = tmp_path / "s", tmp_path / "t"
    _domain(source), _domain(source, "val"), _domain(target, "val"), _domain(target, "test")
    for name in images:
        (target / "img_dir/train").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 3)).save(target / f"img_dir/train/{name}.png")
        if labelled:
            (target / "ann_dir/train").mkdir(parents=True, exist_ok=True)
            Image.fromarray(LABEL, "L").save(target / f"ann_dir/train/{name}.png")
    _classes(target)
    return {"data.dataset": "folders", "data.source_root": str(source),
            "data.target_root": str(target)}


def test_weak_labels_from_points_alone_need_a_click_in_every_image(tmp_path):
    """With data.points alone, an image's clicked classes are its present ones; an image
    without a click is refused rather than trained as containing nothing; with both CSVs, a
    click on a class the image's row leaves out is refused."""
    fields = _target_with(tmp_path, ("a", "b"), labelled=False)
    points, tags = tmp_path / "p.csv", tmp_path / "i.csv"
    points.write_text("a,car,1,0\na,sky,2,2\n")
    cfg = override(preset("smoke"), **fields, **{"data.points": str(points)})
    with pytest.raises(ValueError, match=r"1 image\(s\) without a point, e.g. \['b'\]"):
        data.load(cfg.data, tmp_path / "cache")
    points.write_text("a,car,1,0\na,sky,2,2\nb,road,0,0\n")
    target = data.load(cfg.data, tmp_path / "cache")["target_train"]
    assert target.weak_labels.tolist() == [[0, 1, 1], [1, 0, 0]]
    tags.write_text("a,road,sky\nb,road\n")
    both = override(cfg, **{"data.image_labels": str(tags)})
    with pytest.raises(ValueError, match=r"p.csv:1 \(data.points\): a 'car' point in 'a'"):
        data.load(both.data, tmp_path / "cache")


def test_data_check_reads_a_target_train_without_labels_and_reports_strays(tmp_path, capsys):
    """`wsda data check` on a target whose train folder has no ann_dir/train reads every
    image, reports a file that is not an image, and checks the CSVs against the images."""
    from wsda_lib.cli import main

    fields = _target_with(tmp_path, ("a", "b"), labelled=False)
    target = Path(fields["data.target_root"])
    (target / "img_dir/train/notes.txt").write_text("x")
    tags = tmp_path / "i.csv"
    tags.write_text("image,classes\na.png,road\nb,car,sky\n")
    assert main(["data", "check", "--dataset", "folders", "--root", str(target),
                 "--image-labels", str(tags)]) == 1
    out = capsys.readouterr().out
    assert "no ann_dir/train, images only" in out and "checked 2 images" in out
    assert "notes.txt: not an image" in out and "i.csv: 2 images, 3 image-level labels" in out


def test_class_files_that_could_not_hold_or_export_a_class_are_refused(tmp_path):
    """A class with no stored value (no label could hold it, no prediction of it could be
    exported) and an ignore value that is also a class's are refused naming the file; a YAML
    file whose keys mix numbers and strings reads."""
    with pytest.raises(ValueError, match=r"classes \['sky'\] have no stored value"):
        read_class_file(_classes(tmp_path, values={"1": "road", "2": "car"}))
    with pytest.raises(ValueError, match="\"ignore\" 0 is also the stored value of class 'road'"):
        read_class_file(_classes(tmp_path, ignore=0))
    path = tmp_path / "c.yaml"
    path.write_text("classes: [road, car, sky]\nvalues: {7: road, '26': car, 23: sky}\n")
    assert read_class_file(path).values == {7: 0, 26: 1, 23: 2, 255: 255}


def test_mmsegmentation_suffixes_pair_cityscapes_files_in_city_folders(tmp_path):
    """data.img_suffix and data.seg_map_suffix pair a Cityscapes tree copied as it is
    (aachen/X_leftImg8bit.png with aachen/X_gtFine_labelIds.png), read through the ready-made
    cityscapes-19 class file: labelId 7 is road (0), 26 car (13), 0 ignored."""
    ids = np.array([[7, 7, 26, 0]], np.uint8)
    for d in ("img_dir/val/aachen", "ann_dir/val/aachen"):
        (tmp_path / d).mkdir(parents=True)
    Image.new("RGB", (4, 1)).save(tmp_path / "img_dir/val/aachen/x_leftImg8bit.png")
    Image.fromarray(ids, "L").save(tmp_path / "ann_dir/val/aachen/x_gtFine_labelIds.png")
    (tmp_path / "ann_dir/val/aachen/x_gtFine_color.png").write_bytes(b"")
    split = open_folder_split(tmp_path, "val", read_class_file("cityscapes-19"), "target_val",
                              suffixes=("_leftImg8bit.png", "_gtFine_labelIds.png"))
    assert split.item_name(0) == "x_leftImg8bit.png"
    assert split.label(0).tolist() == [[0, 0, 13, 255]]


def test_data_check_names_the_classes_no_label_map_holds(tmp_path, capsys):
    """The class file is checked against the values actually present: a class that no label
    map of the checked folders holds is named (read in the same pass as the check)."""
    from wsda_lib.cli import main

    root = _domain(tmp_path / "d", label=np.where(LABEL == 2, 0, LABEL).astype(np.uint8))
    _classes(root)
    assert main(["data", "check", "--dataset", "folders", "--root", str(root)]) == 0
    assert "in no label map checked: ['sky']" in capsys.readouterr().out


def test_a_class_file_of_more_classes_than_8_bit_labels_hold_is_refused(tmp_path):
    """255 classes fit (stored values 0-254, 255 the ignore value); with 256 the last class's
    value would be the ignore value, so it is refused where the class file is read."""
    names = [f"c{i}" for i in range(256)]
    path = tmp_path / "classes.json"
    path.write_text(json.dumps({"classes": names[:255]}))
    assert read_class_file(path).class_set.num_classes == 255
    path.write_text(json.dumps({"classes": names}))
    with pytest.raises(ValueError, match=r"classes.json: 256 classes; at most 255 fit: labels "
                                         r"are 8-bit and 255 is the ignore value"):
        read_class_file(path)


def test_the_class_file_is_utf8_whatever_the_locale(tmp_path):
    """A class named 'Straße', saved as UTF-8, reads as 'Straße' (under a Latin-1 locale the
    locale's codec gave 'StraÃ\x9fe'; that every text file is opened as UTF-8 whatever the
    locale is test_every_text_file_is_opened_with_an_explicit_encoding's), and a class file
    in another codec is refused as not UTF-8, naming the file."""
    path = tmp_path / "classes.json"
    path.write_bytes(json.dumps({"classes": ["Straße", "car"]}, ensure_ascii=False)
                     .encode("utf-8"))
    assert read_class_file(path).class_set.names == ("Straße", "car")
    path.write_bytes(json.dumps({"classes": ["Straße"]}, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(ValueError, match=r"classes.json: class file is not UTF-8 text"):
        read_class_file(path)


def test_an_image_over_pillows_pixel_limit_is_refused_naming_file_size_and_limit(
        tmp_path, monkeypatch, capsys):
    """Pillow refuses an image of more than twice Image.MAX_IMAGE_PIXELS with a
    DecompressionBombError, which is no OSError. Here the limit is lowered to 4 pixels, so
    the 4x3 images of the fixture (12 pixels) stand for a 14000x13000 aerial tile:
    `wsda data check` names the file, its size and the limit, with no traceback."""
    from wsda_lib import cli

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4)
    root = _domain(tmp_path / "t")
    _classes(root)
    with pytest.raises(DatasetError, match=r"a.png: image too large for Pillow's "
                                           r"decompression-bomb limit \(4x3, 12 pixels; the "
                                           r"limit is 4 pixels"):
        read_folder_image(root / "img_dir/train/a.png")
    with pytest.raises(DatasetError, match=r"a.png: label too large"):
        read_index_png(root / "ann_dir/train/a.png")
    _domain(root, "val")
    code = cli.main(["data", "check", "--dataset", "folders", "--root", str(root)])
    out = capsys.readouterr()
    assert code != 0 and "a.png: image too large for Pillow's decompression-bomb limit" in \
        out.out + out.err


def test_images_of_several_sizes_without_a_resize_size_are_refused_before_training(
        tmp_path, capsys):
    """Source train of one 4x3 image and one 5x4 one, data.source_size unset: `wsda data
    check` said "no problems" (it read the first image's size only) and training died at the
    first batch with torch's "stack expects each tensor to be equal size". Every file's
    header is read: the check names the sizes and the rarer images in a note (it cannot know
    whether training resizes), and loading the data for training without a size refuses,
    before any step."""
    from wsda_lib.cli import main

    source = _domain(tmp_path / "s")
    _domain(source, "val")
    Image.new("RGB", (5, 4)).save(source / "img_dir/train/b.png")
    Image.fromarray(np.zeros((4, 5), np.uint8), "L").save(source / "ann_dir/train/b.png")
    _classes(source)
    main(["data", "check", "--dataset", "folders", "--root", str(source)])
    out = capsys.readouterr().out  # a note: the check cannot know the size training sets
    assert "note, images of several sizes, none set to resize to: 1 file(s)" in out
    assert "images of 2 sizes (4x3: 1, 5x4: 1; e.g. [" in out and "b.png" in out
    target = _domain(tmp_path / "t")
    _domain(target, "val"), _domain(target, "test")
    _classes(target)
    cfg = override(preset("smoke"), **{"data.dataset": "folders",
                                       "data.source_root": str(source),
                                       "data.target_root": str(target)})
    with pytest.raises(DatasetError, match=r"images of 2 sizes \(4x3: 1, 5x4: 1; .*set "
                                           r"data.source_size or data.target_size"):
        data.load(cfg.data, tmp_path / "cache")
    sized = override(cfg, **{"data.source_size": (4, 3)})
    assert data.load(sized.data, tmp_path / "cache2")["source_train"][1]["image"].shape == \
        (3, 3, 4)


@pytest.mark.slow
def test_a_cached_run_is_never_served_for_data_changed_in_place(exported, tmp_path, capsys):
    """`wsda train` on a folder pair, then pixels of one source label relabelled in place,
    then the same command: it used to print "loaded": true with the old scores (the key
    covered the class file and the CSVs, not the images and labels). Now the run's key
    covers every file the splits read, so the changed data is another run, trained anew,
    and unchanged data still loads the cached one."""
    import shutil

    from wsda_lib.cli import main

    root = tmp_path / "copy"
    shutil.copytree(exported / "labelled", root)
    sets = [f"{k}={v}" for k, v in _folders(root, False).items()]
    command = ["train", "--preset", "smoke", "--stage", "source_only", "--run-dir",
               str(tmp_path / "runs"), "--set", *sets]

    def train():
        assert main(command) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    first = train()
    assert train()["loaded"] and train()["run"] == first["run"]
    label = sorted((root / "source/ann_dir/train").iterdir())[0]
    with Image.open(label) as im:
        ids = np.array(im)
    ids[ids == ids.max()] = ids.min()  # one class relabelled as another, in place
    Image.fromarray(ids, "L").save(label)
    changed = train()
    assert not changed["loaded"] and changed["run"] != first["run"]


def test_every_text_file_is_opened_with_an_explicit_encoding():
    """Python opens text in the locale's codec (GBK, Latin-1, cp1252 on Windows) unless told:
    every read_text, write_text and text-mode open in the library names its encoding, so
    every text file wsda reads or writes is UTF-8 whatever the machine's locale."""
    import ast

    lib = Path(__file__).resolve().parent.parent / "wsda_lib"
    unnamed = []
    for path in sorted(lib.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            keywords = {k.arg for k in node.keywords}
            mode = next((a.value for a in node.args[1:2] if isinstance(a, ast.Constant)), "r")
            mode = next((k.value.value for k in node.keywords
                         if k.arg == "mode" and isinstance(k.value, ast.Constant)), mode)
            text_open = name == "open" and isinstance(node.func, ast.Name) and "b" not in mode
            if (name in ("read_text", "write_text") or text_open) and "encoding" not in keywords:
                unnamed.append(f"{path.relative_to(lib)}:{node.lineno}")
    assert unnamed == []
