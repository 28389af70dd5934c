import math

import numpy as np
import pytest
import torch

from wsda_lib.training.evaluate import confusion_matrix, presence_scores, scores


def test_confusion_and_iou_by_hand():
    label = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 2]])
    conf = confusion_matrix(pred, label, 3)
    assert conf.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    s = scores(conf)
    # IoU_c = TP / (TP + FP + FN): class 0: 1/(1+1+1), class 1: 2/(2+1+0), class 2: 1/(1+0+1)
    assert s["iou"] == pytest.approx([100 / 3, 200 / 3, 50])
    assert s["miou"] == pytest.approx((100 / 3 + 200 / 3 + 50) / 3)
    assert s["pixel_acc"] == pytest.approx(100 * 4 / 6)


def test_absent_class_is_nan_and_left_out_of_the_mean():
    label = torch.tensor([0, 0, 1])
    pred = torch.tensor([0, 0, 1])
    s = scores(confusion_matrix(pred, label, 3))
    assert s["iou"][:2] == [100, 100] and math.isnan(s["iou"][2])
    assert s["miou"] == 100


def test_class_only_predicted_counts_as_zero():
    s = scores(confusion_matrix(torch.tensor([0, 2]), torch.tensor([0, 0]), 3))
    assert s["iou"][2] == 0 and s["miou"] == pytest.approx(25)  # (50 + 0) / 2


def test_all_ignored_gives_nan_not_a_crash():
    s = scores(confusion_matrix(torch.tensor([0]), torch.tensor([255]), 2))
    assert math.isnan(s["miou"]) and math.isnan(s["pixel_acc"])


def test_bad_labels_and_shapes_are_named():
    with pytest.raises(ValueError, match=r"label ids \[5\]"):
        confusion_matrix(torch.tensor([0]), torch.tensor([5]), 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.zeros(2, 2), torch.zeros(2, 3), 3)


def test_presence_precision_recall():
    pred = np.array([[1, 1], [1, 0]])
    true = np.array([[1, 0], [0, 0]])
    p = presence_scores(pred, true)
    assert p["precision"][0] == 50 and p["precision"][1] == 0
    assert p["recall"][0] == 100 and math.isnan(p["recall"][1])
