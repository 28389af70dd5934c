"""Any two domains from folders (data.dataset = "folders", data/folders.py): each format the
reader accepts, each it refuses by name, and the round trip from the embedded benchmark to
folders and back, which trains the same weights."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsda_lib import data
from wsda_lib.config import override, preset
from wsda_lib.data.files import DatasetError
from wsda_lib.data.folders import (
    export_benchmark,
    open_folder_split,
    read_class_file,
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
