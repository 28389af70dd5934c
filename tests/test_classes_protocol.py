"""The class protocols of classes.py against the paper's tables, value by value.

The expected values are written out here literally (not imported from classes.py), and every
raw id is mapped through the public functions on real arrays and compared one by one, so a
swapped pair of ids, a wrong class order or a missing ignored id fails.
"""

import numpy as np
import pytest

from wsda_lib.data.classes import (
    CITYSCAPES_19,
    CITYSCAPES_IGNORED_LABEL_IDS,
    CITYSCAPES_LABEL_TO_TRAIN,
    IGNORE_INDEX,
    SYNTHIA_IGNORED_IDS,
    SYNTHIA_TO_TRAIN,
    protocol,
)

# The paper's tables --------------------------------------------------------------------------

# Cityscapes trainId -> class name, in trainId order.
PAPER_19 = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
            "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
            "bus", "train", "motorcycle", "bicycle"]
# SYNTHIA's 16 classes drop terrain, truck and train; its 13 also drop wall, fence and pole.
# The kept classes are numbered contiguously, in Cityscapes order.
PAPER_16 = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
            "traffic sign", "vegetation", "sky", "person", "rider", "car", "bus", "motorcycle",
            "bicycle"]
PAPER_13 = ["road", "sidewalk", "building", "traffic light", "traffic sign", "vegetation", "sky",
            "person", "rider", "car", "bus", "motorcycle", "bicycle"]
PAPER_NAMES = {19: PAPER_19, 16: PAPER_16, 13: PAPER_13}

# Cityscapes labelId -> trainId (GTA5 label PNGs use the same ids); every other id -> 255.
PAPER_LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
                        23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
# SYNTHIA id -> Cityscapes trainId; 0, 13, 14 and 22 -> 255.
PAPER_SYNTHIA_TO_TRAIN = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10,
                          10: 11, 17: 12, 8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18}
PAPER_SYNTHIA_IGNORED = [0, 13, 14, 22]

CITYSCAPES_IDS = list(range(34))  # labelIds 0..33 (-1, license plate, is not in label PNGs)
SYNTHIA_IDS = list(range(23))     # SYNTHIA ids 0..22


def expected_index(train_id: int, num_classes: int) -> int:
    """The protocol index of a Cityscapes trainId (255 if not evaluated), from the tables."""
    if train_id == 255:
        return 255
    name = PAPER_19[train_id]
    names = PAPER_NAMES[num_classes]
    return names.index(name) if name in names else 255


# The tables themselves -----------------------------------------------------------------------

def test_raw_id_tables_equal_the_paper():
    assert dict(CITYSCAPES_LABEL_TO_TRAIN) == PAPER_LABEL_TO_TRAIN
    assert dict(SYNTHIA_TO_TRAIN) == PAPER_SYNTHIA_TO_TRAIN
    assert sorted(CITYSCAPES_IGNORED_LABEL_IDS) == sorted(
        set(range(-1, 34)) - set(PAPER_LABEL_TO_TRAIN))
    assert sorted(SYNTHIA_IGNORED_IDS) == PAPER_SYNTHIA_IGNORED
    assert IGNORE_INDEX == 255


def test_cityscapes_19_class_names_are_in_train_id_order():
    assert list(CITYSCAPES_19.names) == PAPER_19
    for train_id, name in enumerate(PAPER_19):
        assert CITYSCAPES_19.index(name) == train_id


@pytest.mark.parametrize("num_classes", [19, 16, 13])
def test_protocol_class_names_equal_the_paper(num_classes):
    cs = protocol(num_classes).class_set
    assert list(cs.names) == PAPER_NAMES[num_classes]
    assert cs.num_classes == num_classes == len(cs.colors)


# Raw ids -> protocol indices, through map_label_ids -------------------------------------------

@pytest.mark.parametrize("num_classes", [19, 16, 13])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64])
def test_cityscapes_label_ids_map_value_by_value(num_classes, dtype):
    ids = np.array(CITYSCAPES_IDS, dtype)
    out = protocol(num_classes).map_label_ids(ids, "cityscapes")
    assert out.dtype == np.uint8 and out.shape == ids.shape
    for label_id, got in zip(CITYSCAPES_IDS, out.tolist(), strict=True):
        want = expected_index(PAPER_LABEL_TO_TRAIN.get(label_id, 255), num_classes)
        assert got == want, f"{num_classes} classes: labelId {label_id} -> {got}, want {want}"


@pytest.mark.parametrize("num_classes", [19, 16, 13])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int64])
def test_synthia_ids_map_value_by_value(num_classes, dtype):
    ids = np.array(SYNTHIA_IDS, dtype)
    out = protocol(num_classes).map_label_ids(ids, "synthia")
    assert out.dtype == np.uint8 and out.shape == ids.shape
    for synthia_id, got in zip(SYNTHIA_IDS, out.tolist(), strict=True):
        train_id = PAPER_SYNTHIA_TO_TRAIN.get(synthia_id, 255)
        if synthia_id in PAPER_SYNTHIA_IGNORED:
            assert train_id == 255
        want = expected_index(train_id, num_classes)
        assert got == want, f"{num_classes} classes: SYNTHIA id {synthia_id} -> {got}, want {want}"


def test_19_class_indices_are_the_cityscapes_train_ids():
    p = protocol(19)
    for label_id, train_id in PAPER_LABEL_TO_TRAIN.items():
        assert p.map_label_ids(np.array([label_id]), "cityscapes").tolist() == [train_id]
    for synthia_id, train_id in PAPER_SYNTHIA_TO_TRAIN.items():
        assert p.map_label_ids(np.array([synthia_id]), "synthia").tolist() == [train_id]


@pytest.mark.parametrize("source,ids", [("cityscapes", CITYSCAPES_IDS), ("synthia", SYNTHIA_IDS)])
def test_a_label_map_is_mapped_pixel_by_pixel(source, ids):
    """A 2-D label map with every id, shuffled, maps to the same values in place."""
    rng = np.random.default_rng(0)
    label = rng.permutation(np.array(ids * 3, np.int64)).reshape(3, len(ids))
    table = PAPER_LABEL_TO_TRAIN if source == "cityscapes" else PAPER_SYNTHIA_TO_TRAIN
    for n in (19, 16, 13):
        out = protocol(n).map_label_ids(label, source)
        assert out.shape == label.shape
        want = [[expected_index(table.get(i, 255), n) for i in r] for r in label.tolist()]
        assert out.tolist() == want


@pytest.mark.parametrize("source,bad_id", [
    ("cityscapes", -1), ("cityscapes", 34), ("cityscapes", 40), ("cityscapes", 255),
    ("cityscapes", 1000),
    ("synthia", -1), ("synthia", 23), ("synthia", 24), ("synthia", 255), ("synthia", 65535),
    ("synthia", 65536),
])
def test_ids_the_dataset_does_not_define_are_rejected(source, bad_id):
    good = CITYSCAPES_IDS if source == "cityscapes" else SYNTHIA_IDS
    ids = np.array(good + [bad_id], np.int64)
    with pytest.raises(ValueError, match="my_label"):
        protocol(19).map_label_ids(ids, source, name="my_label")


def test_non_integer_ids_are_rejected():
    with pytest.raises(ValueError, match="integers"):
        protocol(19).map_label_ids(np.array([7.0, 8.0]), "cityscapes")


# Protocol indices -> Cityscapes labelIds, through to_label_ids (export) ---------------------

@pytest.mark.parametrize("num_classes", [19, 16, 13])
def test_to_label_ids_value_by_value(num_classes):
    train_to_label = {t: lid for lid, t in PAPER_LABEL_TO_TRAIN.items()}
    names = PAPER_NAMES[num_classes]
    p = protocol(num_classes)
    prediction = np.array(list(range(num_classes)) + [255], np.int64)
    out = p.to_label_ids(prediction)
    assert out.dtype == np.uint8 and out.shape == prediction.shape
    for index, got in zip(prediction.tolist(), out.tolist(), strict=True):
        want = 0 if index == 255 else train_to_label[PAPER_19.index(names[index])]
        assert got == want, f"{num_classes} classes: index {index} -> labelId {got}, want {want}"
    # And back: exporting then reading the labelIds gives the prediction again.
    assert p.map_label_ids(out[:-1], "cityscapes").tolist() == list(range(num_classes))
    assert p.map_label_ids(out[-1:], "cityscapes").tolist() == [255]
