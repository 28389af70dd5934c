"""Writers of tiny dataset files in the real datasets' exact on-disk formats, shared by the
tests of the readers and of real-data evaluation (the `gta_root` fixture is in conftest.py)."""

import numpy as np
from PIL import Image

H, W = 8, 12


def rgb(path, h=H, w=W, value=None):
    """An 8-bit RGB PNG: seeded noise, or `value` (an (h, w, 3) array) when given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8) if value is None
              else np.asarray(value, np.uint8))
    Image.fromarray(pixels).save(path)


def palette_label(path, ids, h=H, w=W):
    """A palette PNG whose *indices* are the label ids, with colours that differ from them
    (GTA5's format: a reader that converts to RGB reads wrong ids)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.resize(np.asarray(ids, np.uint8), (h, w)), mode="P")
    im.putpalette(list(np.random.default_rng(1).integers(0, 255, 768)))  # colours != ids
    im.save(path)
