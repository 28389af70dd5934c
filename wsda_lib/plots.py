"""Figures. Plotting reads metrics and tensors; it never trains.

Every figure that leaves a notebook goes through `save_figure`: PNG, fixed dpi, no timestamp
or software version in its metadata, so re-running the same code gives the same file.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from .data.classes import ClassSet, colorize

DPI = 110


def save_figure(fig, name: str, directory: str | Path) -> Path:
    """Save `fig` as <directory>/<name>.png (fixed dpi, no metadata) and return the path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return path


def _image(x) -> np.ndarray:
    """(3, H, W) float tensor in [0, 1] or (H, W, 3) uint8 -> (H, W, 3) for imshow."""
    x = np.asarray(x)
    return x.transpose(1, 2, 0) if x.ndim == 3 and x.shape[0] == 3 else x


def sample_grid(rows: dict, class_set: ClassSet, titles=None):
    """rows: {row name: list of (H, W, 3) images or (H, W) label maps}; label maps are
    drawn in the class colours."""
    n_cols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(2.2 * n_cols, 1.25 * len(rows)),
                             squeeze=False)
    for r, (name, items) in enumerate(rows.items()):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            if c < len(items):
                item = np.asarray(items[c])
                ax.imshow(colorize(item, class_set) if item.ndim == 2 else _image(item))
            if c == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
            if titles and r == 0 and c < len(titles):
                ax.set_title(titles[c], fontsize=8)
    legend_handles = [plt.Rectangle((0, 0), 1, 1, color=np.array(col) / 255)
                      for col in class_set.colors]
    fig.legend(legend_handles, class_set.names, loc="lower center", ncol=len(class_set.names),
               fontsize=7, frameon=False, bbox_to_anchor=(0.5, -0.06))
    fig.tight_layout()
    return fig


def class_statistics(sheet: dict):
    """Two bar charts: pixel frequency and presence rate per class, source beside target."""
    import pandas as pd  # seaborn's own dependency

    rows = []
    for domain in ("source", "target"):
        for i, name in enumerate(sheet["classes"]):
            rows.append({"class": name, "domain": domain,
                         "pixel frequency (%)": sheet[domain]["pixel_frequency"][i],
                         "images containing it (%)": sheet[domain]["presence_rate"][i]})
    df = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.2))
    for ax, col in zip(axes, ["pixel frequency (%)", "images containing it (%)"], strict=True):
        sns.barplot(df, x="class", y=col, hue="domain", ax=ax, palette=["#d95f02", "#1b9e77"])
        ax.tick_params(axis="x", rotation=45)
        ax.set_xlabel("")
    fig.tight_layout()
    return fig


def iou_bars(results: dict, class_names, title: str = ""):
    """Grouped bars of per-class IoU; results: {label: list of C IoUs (NaN = absent)}."""
    import pandas as pd

    rows = [{"class": c, "model": label, "IoU (%)": iou}
            for label, ious in results.items() for c, iou in zip(class_names, ious, strict=True)]
    fig, ax = plt.subplots(figsize=(11, 3.2))
    sns.barplot(pd.DataFrame(rows), x="class", y="IoU (%)", hue="model", ax=ax)
    ax.set_ylim(0, 100)
    ax.set_xlabel("")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=len(results))
    fig.tight_layout()
    return fig


def confusion(conf, class_names, title: str = ""):
    """Row-normalised confusion matrix: row = true class, column = predicted class, in %."""
    conf = np.asarray(conf, dtype=float)
    with np.errstate(invalid="ignore"):
        norm = 100 * conf / conf.sum(1, keepdims=True)
    fig, ax = plt.subplots(figsize=(6, 5))
    sns.heatmap(norm, annot=True, fmt=".0f", cmap="Blues", vmin=0, vmax=100, ax=ax,
                xticklabels=class_names, yticklabels=class_names, annot_kws={"size": 7})
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def learning_curves(histories: dict):
    """Training loss and validation mIoU per iteration; histories: {label: history dict}."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3))
    for label, h in histories.items():
        loss = np.asarray(h["loss"])
        k = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        axes[0].plot(h["iteration"][k - 1:], smooth, label=label)
        axes[1].plot(h["val_iteration"], h["val_miou"], marker="o", label=label)
    axes[0].set(xlabel="iteration", ylabel="training loss", yscale="log")
    axes[1].set(xlabel="iteration", ylabel="validation mIoU (%)")
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    return fig
