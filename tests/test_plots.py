"""Figures put things where the data says: known inputs, known marks."""

import matplotlib
import numpy as np
import pytest

from wsda_lib.data.classes import ClassSet
from wsda_lib.teaching import plots

matplotlib.use("Agg")
CLASSES = ClassSet("two", ("road", "car"), ((128, 64, 128), (0, 0, 142)))


def test_a_click_is_drawn_at_its_column_and_row_in_its_class_colour():
    """Points are flat indices y * W + x into the label map: row 1, column 3 of a 4 x 8 map
    is 1 * 8 + 3 = 11, drawn at x = 3, y = 1 on the image and on the ground truth."""
    images, labels = np.zeros((1, 3, 4, 8)), np.zeros((1, 4, 8), np.int64)
    points = np.array([[-1, 11]])   # road not clicked, car at pixel 11
    fig = plots.clicks(images, points, labels, CLASSES)
    for ax in fig.axes[:2]:
        [marks] = ax.collections
        assert marks.get_offsets().tolist() == [[3.0, 1.0]]
        assert marks.get_facecolors()[0][:3] == pytest.approx(np.array([0, 0, 142]) / 255)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["car"]


def test_clicks_refuse_labels_of_another_size_than_the_images():
    with pytest.raises(ValueError, match="points index the label map"):
        plots.clicks(np.zeros((1, 3, 4, 8)), np.array([[0, -1]]), np.zeros((1, 8, 16)),
                     CLASSES)


def test_a_stage_keeps_its_colour_from_figure_to_figure():
    """iou_bars draws each label in the colour given for it, whichever other labels share
    the figure; the series' colours give every stage its own."""
    from types import SimpleNamespace

    from wsda_lib.core.config import preset
    from wsda_lib.stages import STAGES, title

    red, blue = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)
    for results in ({"a": [10.0, 20.0], "b": [30.0, 40.0]}, {"b": [30.0, 40.0]}):
        fig = plots.iou_bars(results, ["x", "y"], colours={"a": red, "b": blue})
        bars = [p for p in fig.axes[0].patches if p.get_height() > 0]
        heights = {p.get_height(): tuple(p.get_facecolor()[:3]) for p in bars}
        assert heights[30.0] == heights[40.0] == blue
        assert all(heights[h] == red for h in (10.0, 20.0) if h in heights)
    from wsda_lib.teaching.session import Session

    cfg = preset("default")
    colours = Session.colours(SimpleNamespace(cfg=cfg))
    assert set(colours) == {title(name, cfg) for name in STAGES}
    assert len(set(colours.values())) == len(colours)
