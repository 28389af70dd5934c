import numpy as np
import pytest

from wsda_lib.core.config import preset
from wsda_lib.data import load as load_benchmark
from wsda_lib.data import synthetic
from wsda_lib.data.benchmark import datasheet
from wsda_lib.data.classes import EMBEDDED, IGNORE_INDEX


def test_same_seed_same_images_different_seed_different_images():
    a = synthetic.generate_split("target_train", 4, seed=7)
    b = synthetic.generate_split("target_train", 4, seed=7)
    c = synthetic.generate_split("target_train", 4, seed=8)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_image_i_does_not_depend_on_split_size():
    small = synthetic.generate_split("source_train", 2, seed=0)
    large = synthetic.generate_split("source_train", 5, seed=0)
    assert np.array_equal(small[0], large[0][:2])


def test_splits_differ():
    train = synthetic.generate_split("target_train", 3, seed=0)[0]
    test = synthetic.generate_split("target_test", 3, seed=0)[0]
    assert not np.array_equal(train, test)


@pytest.mark.parametrize("split", sorted(synthetic.SPLITS))
def test_labels_are_valid_class_ids(split):
    images, labels = synthetic.generate_split(split, 8, seed=1)
    assert images.shape == (8, 64, 128, 3) and images.dtype == np.uint8
    assert labels.shape == (8, 64, 128) and labels.dtype == np.uint8
    assert labels.max() < EMBEDDED.num_classes and not (labels == IGNORE_INDEX).any()
    # road and sky are in every image
    for lb in labels:
        assert (lb == synthetic.ROAD).any() and (lb == synthetic.SKY).any()


def test_other_sizes_work():
    images, labels = synthetic.generate_split("source_val", 2, seed=0, height=32, width=48)
    assert images.shape == (2, 32, 48, 3) and labels.shape == (2, 32, 48)


def test_bad_split_and_size_are_named():
    with pytest.raises(KeyError, match="unknown split 'nope'"):
        synthetic.generate_split("nope", 1, seed=0)
    with pytest.raises(ValueError, match="height=8"):
        synthetic.generate_split("source_val", 1, seed=0, height=8)


def test_domains_differ_in_appearance_and_statistics():
    src_img, src_lb = synthetic.generate_split("source_train", 64, seed=0)
    tgt_img, tgt_lb = synthetic.generate_split("target_train", 64, seed=0)
    # Target is less saturated (greyer palette, lower saturation).
    sat = lambda im: (im.max(-1).astype(int) - im.min(-1)).mean()  # noqa: E731
    assert sat(tgt_img) < 0.8 * sat(src_img)
    # Label shift: more vegetation and fewer cars in the target.
    frac = lambda lb, c: (lb == c).mean()  # noqa: E731
    assert frac(tgt_lb, synthetic.VEGETATION) > frac(src_lb, synthetic.VEGETATION)
    assert frac(tgt_lb, synthetic.CAR) < frac(src_lb, synthetic.CAR)


def test_benchmark_cache_is_reused_and_items_have_the_interface(tmp_path):
    cfg = preset("smoke").data
    first = load_benchmark(cfg, tmp_path, verbose=False)
    files = sorted(first.cache_dir.glob("*.npz"))
    assert len(files) == 5
    mtimes = [f.stat().st_mtime_ns for f in files]
    second = load_benchmark(cfg, tmp_path, verbose=False)
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert np.array_equal(first["target_test"].images, second["target_test"].images)
    item = second["source_train"][0]
    assert item["image"].shape == (3, 64, 128)
    assert 0 <= item["image"].min() <= item["image"].max() <= 1
    assert item["label"].shape == (64, 128) and str(item["label"].dtype) == "torch.int64"
    assert item["weak_label"].shape == (EMBEDDED.num_classes,)
    assert item["name"] == "source_train/00000"


def test_corrupt_cache_file_is_named_not_overwritten(tmp_path):
    cfg = preset("smoke").data
    bench = load_benchmark(cfg, tmp_path, verbose=False)
    path = bench.cache_dir / "target_val.npz"
    path.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="target_val.npz"):
        load_benchmark(cfg, tmp_path, verbose=False)
    assert path.read_bytes() == b"not an npz"


def test_datasheet_sums_and_ranges(smoke_bench):
    sheet = datasheet(smoke_bench)
    for domain in ("source", "target"):
        assert sum(sheet[domain]["pixel_frequency"]) == pytest.approx(100)
        assert all(0 <= p <= 100 for p in sheet[domain]["presence_rate"])
    # road is in every image, in both domains
    assert sheet["source"]["presence_rate"][0] == 100 and sheet["target"]["presence_rate"][0] == 100
