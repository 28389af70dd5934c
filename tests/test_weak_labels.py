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
    counts = np.array([[100, 5, 0], [40, 30, 0]])
    typical = typical_areas(counts)          # medians over images that contain the class
    assert typical.tolist() == [70.0, 17.5, 0.0]
    # present when count > 0.1 * typical: 5 > 1.75 yes; 0 never
    assert image_labels(counts, typical).tolist() == [[1, 1, 0], [1, 1, 0]]
    assert image_labels(counts, typical, fraction=0.5).tolist() == [[1, 0, 0], [1, 1, 0]]
    assert image_labels(np.array([[0, 1, 2]])).tolist() == [[0, 1, 1]]  # "any pixel" rule
