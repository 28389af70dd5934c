import numpy as np
import pytest

from wsda_lib.data.weak_labels import class_pixel_counts, image_labels, typical_areas


def test_counts_ignore_255():
    labels = np.array([[[0, 0, 1], [255, 2, 2]]], np.uint8)  # one 2x3 image
    assert class_pixel_counts(labels, 3).tolist() == [[2, 1, 2]]


def test_unknown_ids_are_named():
    with pytest.raises(ValueError, match=r"\[7\]"):
        class_pixel_counts(np.array([[[0, 7]]]), 3)


def test_ten_percent_rule_by_hand():
    counts = np.array([[100, 5, 0], [40, 30, 0]])   # images of 1000 pixels
    typical = typical_areas(counts, 1000)   # median shares over images that contain the class
    assert typical.tolist() == pytest.approx([0.07, 0.0175, 0.0])
    # present when count / 1000 > 0.1 * typical: 5 / 1000 > 0.00175 yes; 0 never
    assert image_labels(counts, typical, pixels=1000).tolist() == [[1, 1, 0], [1, 1, 0]]
    assert image_labels(counts, typical, 0.5, pixels=1000).tolist() == [[1, 0, 0], [1, 1, 0]]
    assert image_labels(np.array([[0, 1, 2]])).tolist() == [[0, 1, 1]]  # "any pixel" rule


def test_the_rule_does_not_depend_on_the_labels_resolution():
    """A class covering the same share of an image is present or absent alike whether its
    label map is 64x128 or, like Cityscapes val, four times as large."""
    typical = typical_areas(np.array([[400, 0]]), 64 * 128)
    small, large = np.array([[41, 0]]), np.array([[4 * 41, 0]])
    assert image_labels(small, typical, pixels=64 * 128).tolist() == [[1, 0]]
    assert image_labels(large, typical, pixels=4 * 64 * 128).tolist() == [[1, 0]]
    assert image_labels(np.array([[39, 0]]), typical, pixels=64 * 128).tolist() == [[0, 0]]


def test_the_presence_explorer_pools_thresholds_and_scores_by_hand():
    """widgets.presence_at on one image of two classes, a 1x1 logit map (0, -2): P_c =
    σ(0) = 0.5 and σ(-2) = 0.12; at T = 0.2 only class 0 is labelled present, so against
    truth (1, 1) precision is 100% and recall 50%. Pooled over N = 4 positions instead of
    1, every score drops by log 4 before the sigmoid: σ(-log 4) = 0.2, not above T."""
    import torch

    from wsda_lib.teaching.widgets import presence_at, presence_explorer

    logits, truth = torch.tensor([[[[0.0]], [[-2.0]]]]), torch.tensor([[1.0, 1.0]])
    p = presence_at(logits, truth, threshold=0.2)
    assert torch.allclose(p["scores"], torch.tensor([[0.5, 0.1192]]), atol=1e-4)
    assert p["labels"].tolist() == [[1.0, 0.0]] and (p["precision"], p["recall"]) == (100, 50)
    assert presence_at(logits, truth, threshold=0.2, positions=4)["labels"].sum() == 0
    table = presence_explorer(logits, truth, ["road", "car"], interactive=False)
    assert table.loc[("N = 1", 0.2), "recall (%)"] == 50.0
