"""Writers of tiny dataset files in the real datasets' exact on-disk formats, shared by the
tests of the readers and of real-data evaluation (the `gta_root` fixture is in conftest.py)."""

import numpy as np
import torch
from PIL import Image

from wsda_lib.core.config import DataConfig

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


# Real-format trees and a fake model for the readers, evaluation and export tests.
def gray_label(path, ids, h=H, w=W):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.resize(np.asarray(ids, np.uint8), (h, w))).save(path)


def synthia_label(path, ids, h=H, w=W):
    path.parent.mkdir(parents=True, exist_ok=True)
    red = np.resize(np.asarray(ids, np.uint16), (h, w))
    import cv2  # the dev extra; SYNTHIA's 16-bit labels need it

    cv2.imwrite(str(path), np.stack([np.zeros_like(red), np.zeros_like(red), red], axis=2))


def cityscapes_tree(root, splits=(("train", 3), ("val", 2)), h=H, w=W, ids=(7, 8, 26, 22)):
    for split, n in splits:
        for i in range(n):
            stem = f"aachen_{i:06d}_000019"
            rgb(root / f"leftImg8bit/{split}/aachen/{stem}_leftImg8bit.png", h=h, w=w)
            gray_label(root / f"gtFine/{split}/aachen/{stem}_gtFine_labelIds.png", ids, h, w)
    return root


def synthia_tree(root, n=4):
    rng = np.random.default_rng(5)
    for i in range(n):
        rgb(root / f"RGB/{i:07d}.png", h=16, w=24)
        # road, sidewalk, wall (dropped in 13), terrain (dropped in 16), car, person
        synthia_label(root / f"GT/LABELS/{i:07d}.png", rng.choice([3, 4, 21, 16, 8, 10], 24),
                       h=16, w=24)
    return root


class ClassFromRed(torch.nn.Module):
    """A fake segmentation model: the predicted class of a pixel is its red value // 10, so
    that tests choose the predictions by writing images."""

    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, images):
        red = (images[:, :1] * 255).round()
        logits = -(red - 10 * torch.arange(self.num_classes).view(1, -1, 1, 1)).abs()
        return logits, None


def cityscapes_val_for_scoring(root):
    """Two val images, 8x12, whose ground truth mixes kept, dropped (terrain 22, truck 27,
    wall 12) and void (0, 1) labelIds, and whose red channel says what ClassFromRed predicts."""
    rng = np.random.default_rng(7)
    gt_ids = [7, 8, 11, 12, 13, 17, 21, 22, 23, 24, 26, 27, 28, 0, 1, 33]
    gts, reds = [], []
    for i in range(2):
        stem = f"aachen_{i:06d}_000019"
        gt = rng.choice(gt_ids, (H, W)).astype(np.uint8)
        pred = rng.integers(0, 13, (H, W))            # protocol classes of the 13-class set
        red = (10 * pred).astype(np.uint8)
        rgb(root / f"leftImg8bit/val/aachen/{stem}_leftImg8bit.png",
             value=np.dstack([red, red, red]))
        gray_label(root / f"gtFine/val/aachen/{stem}_gtFine_labelIds.png", gt)
        gts.append(gt)
        reds.append(pred)
    return np.stack(gts), np.stack(reds)


def gta5_to(tgt, gta_root) -> DataConfig:
    return DataConfig(dataset="gta5", source_root=str(gta_root), target_root=str(tgt),
                      val_count=1, source_size=None, target_size=(W, H), class_protocol=19)


# A GTA5 and a Cityscapes tree with several classes, for points and self-training.
POINT_H, POINT_W = 32, 64   # point_trees' files; training resizes the target to (64, 32)


def noise_rgb(path, rng):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (POINT_H, POINT_W, 3), np.uint8)).save(path)


def id_label(path, ids, palette: bool):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.resize(np.asarray(ids, np.uint8), (POINT_H, POINT_W)),
                         mode="P" if palette else "L")
    if palette:
        im.putpalette(list(np.random.default_rng(1).integers(0, 255, 768)))  # colours != ids
    im.save(path)


def point_trees(root):
    """A GTA5 tree (5 images) and a Cityscapes tree (train 5, val 2) with several classes."""
    src, tgt, rng = root / "gta5", root / "cityscapes", np.random.default_rng(0)
    for i in range(5):
        noise_rgb(src / f"images/{i:05d}.png", rng)
        id_label(src / f"labels/{i:05d}.png", rng.choice([7, 8, 11, 21, 23, 26], 6), True)
    for split, n in (("train", 5), ("val", 2)):
        for i in range(n):
            stem = f"{'aachen' if i % 2 else 'bremen'}_{i:06d}_000019"
            city = stem.split("_")[0]
            noise_rgb(tgt / f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png", rng)
            id_label(tgt / f"gtFine/{split}/{stem.split('_')[0]}/{stem}_gtFine_labelIds.png",
                   rng.choice([7, 8, 21, 23, 26], 7), False)
    return src, tgt
