"""Everything that can be checked before training is checked before training: each case here
once failed only after one or more stages had trained. Every test asserts that nothing was
trained (no run folder holds a checkpoint or a resume point) and that the CLI's error is one
line naming the file or the field."""

import numpy as np
import pytest
import torch
from PIL import Image
from real_trees import point_trees

from wsda_lib.cli import main
from wsda_lib.core.config import RANGES, override, preset
from wsda_lib.data.weak_labels import image_labels
from wsda_lib.method.pixel_adaptation import fourier_amplitude_swap, restyle_source
from wsda_lib.method.self_training import class_thresholds
from wsda_lib.method.weak_classification import pseudo_weak_labels, smooth_max_pool

TINY = ["model.backbone='slim'", "model.base_width=4", "model.aspp_rates=(1, 2)",
        "train.iterations=2", "adapt.iterations=2", "train.eval_every=100",
        "data.source_size=(96, 48)", "data.target_size=(64, 32)", "data.val_count=1",
        "adapt.output_disc_width=4", "train.eval_batch_size=3"]


def _train_real(tmp_path, stage="source_only", extra=()):
    src, tgt = tmp_path / "gta5", tmp_path / "cityscapes"
    changed = {e.split("=")[0] for e in extra}
    tiny = [t for t in TINY if t.split("=")[0] not in changed]  # each field once
    return main(["train", "--preset", "paper_gta5", "--stage", stage, "--source-root",
                 str(src), "--target-root", str(tgt), "--run-dir", str(tmp_path / "runs"),
                 "--device", "cpu", "--set", *tiny, *extra])


def _nothing_trained(run_dir):
    models = run_dir / "models"
    return not models.exists() or not any(models.rglob("*.pt"))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_trainids_in_cityscapes_val_are_named_as_such_before_training(tmp_path, capsys):
    point_trees(tmp_path)
    label = next((tmp_path / "cityscapes/gtFine/val").rglob("*_labelIds.png"))
    ids = np.resize(np.array([0, 1, 13, 255], np.uint8), (32, 64))  # trainIds, not labelIds
    Image.fromarray(ids, mode="L").save(label)
    assert _train_real(tmp_path) == 2
    err = _one_line_error(capsys)
    assert "target_test" in err and label.name in err
    assert "looks like a *_labelTrainIds.png" in err
    assert _nothing_trained(tmp_path / "runs")


def test_a_16_bit_grey_image_in_an_evaluation_split_is_refused_before_training(tmp_path,
                                                                              capsys):
    point_trees(tmp_path)
    image = next((tmp_path / "cityscapes/leftImg8bit/val").rglob("*.png"))
    Image.fromarray(np.full((32, 64), 40000, np.uint16)).save(image)  # 16-bit greyscale
    assert _train_real(tmp_path) == 2
    err = _one_line_error(capsys)
    assert image.name in err and "unsupported image format" in err
    assert _nothing_trained(tmp_path / "runs")


@pytest.mark.parametrize("preset_name, sizes, fields", [
    ("smoke", ["data.height=16", "data.width=32"], "data.height=16, data.width=32"),
    ("paper_gta5", ["data.target_size=(32, 16)"], "data.target_size=(32, 16)"),
])
def test_sizes_the_discriminator_cannot_take_are_refused_before_source_only_trains(
        tmp_path, capsys, preset_name, sizes, fields):
    if preset_name == "smoke":
        code = main(["train", "--preset", "smoke", "--stage", "adaptsegnet", "--run-dir",
                     str(tmp_path / "runs"), "--device", "cpu", "--set", *sizes])
    else:
        point_trees(tmp_path)
        code = _train_real(tmp_path, "adaptsegnet", sizes)
    assert code == 2
    err = _one_line_error(capsys)
    assert "stage 'adaptsegnet'" in err and fields in err
    assert "output-space discriminator" in err and "at least 32 px" in err
    assert _nothing_trained(tmp_path / "runs")


# Each range is written once (config.RANGES) and read by the functions that take the field's
# value: the config and the function accept and refuse the same values.
RANGE_USERS = {
    "adapt.fda_beta": lambda v: fourier_amplitude_swap(torch.rand(1, 3, 8, 8),
                                                       torch.rand(1, 3, 8, 8), v),
    "adapt.fda_prob": lambda v: restyle_source(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8),
                                               v, 0.05, torch.Generator()),
    "data.weak_label_fraction": lambda v: image_labels(np.array([[5, 0]]), np.array([0.1, 0.1]),
                                                       v, pixels=10),
    "adapt.st_quantile": lambda v: class_thresholds(torch.rand(1, 2, 2),
                                                    torch.zeros(1, 2, 2, dtype=torch.long),
                                                    2, v, 0.9),
    "adapt.smooth_max_r": lambda v: smooth_max_pool(torch.zeros(1, 2, 2, 2), v),
    "adapt.pseudo_threshold": lambda v: pseudo_weak_labels(torch.zeros(1, 2, 2, 2), v),
}
BOUNDARIES = {"adapt.fda_beta": [0, 0.01, 0.5, 0.51], "adapt.fda_prob": [-0.1, 0, 1, 1.1],
              "data.weak_label_fraction": [0, 0.1, 1.0, 1.5],
              "adapt.st_quantile": [-0.1, 0, 1, 1.1], "adapt.smooth_max_r": [0, 1e-3, 5],
              "adapt.pseudo_threshold": [0, 0.2, 1]}


@pytest.mark.parametrize("field", sorted(RANGE_USERS))
def test_config_and_function_accept_the_same_values(field):
    for value in BOUNDARIES[field]:
        try:
            override(preset("smoke"), **{field: value})
            config_ok = True
        except ValueError as e:
            config_ok, config_error = False, str(e)
        try:
            RANGE_USERS[field](value)
            function_ok = True
        except ValueError as e:
            function_ok, function_error = False, str(e)
            assert field in function_error  # the function's error names the field too
        assert config_ok == function_ok, (field, value)
        if not config_ok:  # the same words (the config has made an int a float)
            assert function_error.split(": ")[-1] == config_error.split(": ")[-1]
    assert field in RANGES


def test_fda_beta_and_weak_label_fraction_at_their_upper_bounds_train(tmp_path):
    """Both were accepted by the config and refused by the function after source-only."""
    cfg = override(preset("smoke"), **{"adapt.fda_beta": 0.5, "data.weak_label_fraction": 1.0,
                                       "train.iterations": 2, "adapt.iterations": 2})
    from wsda_lib.data import load
    from wsda_lib.stages import run_stage

    bench = load(cfg.data, tmp_path / "data", verbose=False)
    result = run_stage("uda_pixel", cfg, bench, 0, "cpu", tmp_path / "models", progress=False)
    assert 0 <= result.metrics["target_test"]["miou"] <= 100


@pytest.mark.parametrize("change, named", [
    ({"adapt.fda_prob": 0.0}, "adapt.pixel_adaptation=True and adapt.fda_prob=0"),
    ({"adapt.lambda_adv": 0.0}, "adapt.output_alignment=True and adapt.lambda_adv=0"),
    ({"adapt.lambda_cw": 0.0}, "adapt.category_alignment=True and adapt.lambda_cw=0"),
    ({"adapt.lambda_c": 0.0}, "adapt.weak_loss=True and adapt.lambda_c=0"),
])
def test_a_term_switched_on_with_nothing_to_do_is_refused(tmp_path, capsys, change, named):
    """A stage titled '+ pixel adaptation' whose restyling never happens (or any term whose
    weight is 0) would train exactly as without it: refused by name, before anything runs."""
    sets = [f"{k}={v}" for k, v in change.items()]
    assert main(["train", "--preset", "smoke", "--stage", "uda_pixel", "--run-dir",
                 str(tmp_path / "runs"), "--set", *sets]) == 2
    assert named in _one_line_error(capsys)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv, code, says", [
    (["train", "--preset", "smoke", "--set", "train.iterations=0"], 2,
     "train.iterations=0: expected >= 1"),
    (["evaluate", "--checkpoint", "{tmp}/missing.pt"], 2, "missing.pt"),
    (["data", "check", "--dataset", "gta5", "--root", "{tmp}/nothing"], 2, "nothing"),
    (["official-eval", "--gt", "{tmp}/nothing", "--predictions", "{tmp}/none"], 2, "nothing"),
    (["reproduce", "--seeds", "0"], 2, "--seeds must be >= 1"),
    (["reproduce", "--cell-timeout", "0"], 2, "cell_timeout=0: expected None (no limit)"),
    (["gpu-check", "--tiny", "--steps", "0"], 2, "--steps must be >= 1"),
    (["study", "--preset", "smoke", "--run-dir", "{tmp}/file"], 2, "file"),
])
def test_every_command_reports_bad_input_in_one_line(tmp_path, capsys, argv, code, says):
    (tmp_path / "file").write_text("a file where a folder should be")
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == code
    assert says in _one_line_error(capsys)


def test_trainids_in_target_train_are_found_before_source_only_trains(tmp_path, capsys):
    """An adaptation stage reads target train's labels (the pseudo-weak labels' quality);
    a bad one was found only after source-only had trained."""
    point_trees(tmp_path)
    label = sorted((tmp_path / "cityscapes/gtFine/train").rglob("*_labelIds.png"))[0]
    Image.fromarray(np.resize(np.array([0, 1, 255], np.uint8), (32, 64)), mode="L").save(label)
    assert _train_real(tmp_path, "uda_weak") == 2
    err = _one_line_error(capsys)
    assert "target_train" in err and label.name in err and "labelTrainIds" in err
    assert _nothing_trained(tmp_path / "runs")


def test_a_passed_check_is_recorded_and_a_changed_file_is_read_again(tmp_path, monkeypatch):
    from wsda_lib.data.checks import check_split_files
    from wsda_lib.data.cityscapes import cityscapes

    point_trees(tmp_path)
    root = tmp_path / "cityscapes"
    check_split_files(cityscapes(root, "val"), "target_test", True, tmp_path / "cache")
    assert len(list((tmp_path / "cache/checked").glob("*.json"))) == 1
    split = cityscapes(root, "val")
    monkeypatch.setattr(split, "label", lambda i: pytest.fail("read again"))
    check_split_files(split, "target_test", True, tmp_path / "cache")  # recorded: not read
    image = next((root / "leftImg8bit/val").rglob("*.png"))
    Image.fromarray(np.full((32, 64), 40000, np.uint16)).save(image)  # the tree changed
    with pytest.raises(ValueError, match="unsupported image format"):
        check_split_files(cityscapes(root, "val"), "target_test", True, tmp_path / "cache")


def test_translated_images_of_another_format_are_refused_before_training(tmp_path, capsys):
    point_trees(tmp_path)
    translated = tmp_path / "translated"
    translated.mkdir()
    for i in range(5):
        Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(translated / f"{i:05d}.png")
    Image.fromarray(np.full((32, 64), 9, np.uint8)).save(translated / "00001.png")  # grey
    assert _train_real(tmp_path, "uda_pixel",
                       [f"adapt.translated_source_dir='{translated}'"]) == 2
    err = _one_line_error(capsys)
    assert "00001.png" in err and "unsupported image format" in err
    assert _nothing_trained(tmp_path / "runs")


@pytest.mark.parametrize("argv, says", [
    (["--preset", "smoke", "--device", "gpu"], "device 'gpu': expected 'auto', 'cpu'"),
    (["--preset", "smoke", "--source-root", "{tmp}", "--target-root", "{tmp}"],
     "data.source_root and data.target_root name folders of real data"),
    (["--preset", "smoke", "--stage", "uda_weak", "--set",
      "adapt.translated_source_dir='{tmp}'"], "no stage of source_only -> uda_weak uses pixel"),
])
def test_what_a_run_would_silently_ignore_or_misread_is_refused(tmp_path, capsys, argv, says):
    code = main(["train", "--run-dir", str(tmp_path / "runs"),
                 *[a.replace("{tmp}", str(tmp_path)) for a in argv]])
    assert code == 2 and says in _one_line_error(capsys)
    assert not (tmp_path / "runs/models").exists()


@pytest.mark.parametrize("argv, says", [
    (["train", "--preset", "smoke", "--seed", "-1"], "--seed must be >= 0, got -1"),
    (["reproduce", "--preset", "smoke", "--device", "cud"], "device 'cud': expected"),
    (["reproduce", "--preset", "smoke", "--seed", "-1"], "--seed must be >= 0, got -1"),
    (["train", "--preset", "smoke", "--set", "data.sizes={'source_train': 8}"],
     "data.sizes={'source_train': 8}: expected a number of images >= 1 for each of"),
    (["train", "--preset", "smoke", "--set", "train.lr=0.1", "train.lr=0.01"],
     "--set train.lr: given twice"),
])
def test_seeds_devices_and_sizes_are_refused_before_any_data_or_notebook(tmp_path, capsys,
                                                                          argv, says):
    assert main([*argv, "--run-dir", str(tmp_path / "runs")]) == 2
    assert says in _one_line_error(capsys)
    assert not (tmp_path / "runs").exists()


def test_a_device_this_machine_lacks_is_refused_by_name(monkeypatch):
    from wsda_lib.core.device import resolve_device

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device 'mps': no Apple GPU"):
        resolve_device("mps")


def test_data_check_of_cityscapes_checks_both_splits_by_default(tmp_path, capsys):
    """It checked train alone and said 'no problems' over a broken val split."""
    point_trees(tmp_path)
    root = tmp_path / "cityscapes"
    image = next((root / "leftImg8bit/val").rglob("*.png"))
    image.rename(image.with_suffix(".jpg"))
    assert main(["data", "check", "--dataset", "cityscapes", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"cityscapes train at {root}: checked 5 image/label pairs: no problems" in out
    assert f"cityscapes val at {root}: checked 1 image/label pairs: " in out and ".jpg" in out


def test_a_label_file_of_lossy_content_is_refused_whatever_its_name(tmp_path, capsys):
    """A *_gtFine_labelIds.png that holds JPEG data (a tool chose the format and kept the
    name) used to pass `wsda data check` and read wrong ids at edges; its content is
    JPEG, so it is refused by name, and training stops before anything trains."""
    point_trees(tmp_path)
    root = tmp_path / "cityscapes"
    label = next((root / "gtFine/train").rglob("*_gtFine_labelIds.png"))
    with Image.open(label) as im:
        im.convert("L").save(label, format="JPEG")
    assert main(["data", "check", "--dataset", "cityscapes", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"{label}: the label file holds JPEG data, whatever its name" in out
    assert _train_real(tmp_path) == 2
    assert "holds JPEG data" in _one_line_error(capsys)
    assert _nothing_trained(tmp_path / "runs")


def test_a_gta5_tree_of_jpeg_images_says_what_it_found(tmp_path, capsys):
    """GTA5's images are PNG; a tree whose images are all .jpg used to get "the split is
    empty (no image/label pairs found)" and no file named. The check says what it found."""
    point_trees(tmp_path)
    root = tmp_path / "gta5"
    for image in sorted((root / "images").glob("*.png")):
        with Image.open(image) as im:
            im.convert("RGB").save(image.with_suffix(".jpg"))
        image.unlink()
    count = len(list((root / "images").glob("*.jpg")))
    assert main(["data", "check", "--dataset", "gta5", "--root", str(root)]) == 2
    assert f"the split is empty: no {root / 'images'}/*.png; found {count} other file(s) " \
        f"(.jpg), e.g. ['" in _one_line_error(capsys)


def test_images_with_an_exif_orientation_are_named_by_the_check(tmp_path, capsys):
    """Images tagged with EXIF orientation 6 and 3 are read as stored, which is right for
    Cityscapes (its labels follow the stored pixels) and wrong for labels drawn on the
    displayed image: `wsda data check` names them in a note, and still finds no problem."""
    point_trees(tmp_path)
    root = tmp_path / "cityscapes"
    images = sorted((root / "leftImg8bit/train").rglob("*.png"))[:2]
    for image, orientation in zip(images, (6, 3), strict=True):
        with Image.open(image) as im:
            exif = im.getexif()
            exif[0x0112] = orientation
            im.save(image, exif=exif)
    assert main(["data", "check", "--dataset", "cityscapes", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "no problems" in out and "note, EXIF orientation tag other than 1, read as stored " \
        "(not as displayed)" in out and ": 2 file(s), e.g. [" in out
    assert str(images[0]) in out and str(images[1]) in out
