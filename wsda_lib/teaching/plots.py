"""Figures. Plotting reads metrics and tensors; it never trains.

Every figure that leaves a notebook goes through `save_figure`: PNG, fixed dpi, no timestamp
or software version in its metadata, so re-running the same code gives the same file.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from wsda_lib.data.classes import IGNORE_COLOR, IGNORE_INDEX, ClassSet, colorize
from wsda_lib.method.weak_classification import smooth_max_pool

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


def sample_grid(rows: dict, class_set: ClassSet, titles=None, scale: float = 1.0):
    """rows: {row name: list of (H, W, 3) images or (H, W) label maps}; label maps are
    drawn in the class colours, ignored pixels (255) in white, named in the legend when
    any map has them; the class legend appears only when there are label maps. `scale`
    enlarges the thumbnails."""
    n_cols = max(len(v) for v in rows.values())
    height = 1.25 * scale * len(rows)
    fig, axes = plt.subplots(len(rows), n_cols, squeeze=False,
                             figsize=(2.2 * scale * n_cols, height))
    ignored = labelled = False
    for r, (name, items) in enumerate(rows.items()):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            if c < len(items):
                item = np.asarray(items[c])
                ax.imshow(colorize(item, class_set) if item.ndim == 2 else _image(item))
                ignored |= bool(item.ndim == 2 and (item == IGNORE_INDEX).any())
                labelled |= item.ndim == 2
            if c == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
            if titles and r == 0 and c < len(titles):
                ax.set_title(titles[c], fontsize=8)
    if not labelled:
        fig.tight_layout()
        return fig
    colors, names = list(class_set.colors), list(class_set.names)
    if ignored:
        colors, names = colors + [IGNORE_COLOR], names + ["ignored (no label)"]
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=np.array(col) / 255, edgecolor="0.5",
                             linewidth=0.5) for col in colors]
    fig.tight_layout(rect=(0, 0.3 / height, 1, 1))  # 0.3 inch for the legend below
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, 0))
    return fig


def clicks(images, points, labels, class_set: ClassSet):
    """What a person gives in WDA with points (docs/method.md §4): each image with one marker
    per clicked pixel, filled with its class's colour, above the image's ground truth with
    the same markers; a legend names the classes clicked.

    images: (N, 3, H, W) floats in [0, 1]; points: (N, C) flat pixel indices y * W + x, −1
    where class c has no click (point_supervision.sample_points); labels: (N, H, W) label
    maps, drawn in the class colours for comparison. Returns the figure."""
    images, points, labels = np.asarray(images), np.asarray(points), np.asarray(labels)
    if labels.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"clicks: labels of size {labels.shape[-2:]} for images of size "
                         f"{images.shape[-2:]}; the points index the label map, so both must "
                         f"have one size")
    n, width = len(images), labels.shape[-1]
    fig, axes = plt.subplots(2, n, squeeze=False, figsize=(2.6 * n, 3.7))
    colours = np.asarray(class_set.colors, float) / 255
    for i in range(n):
        axes[0, i].imshow(_image(images[i]))
        axes[1, i].imshow(colorize(labels[i], class_set))
        clicked = np.flatnonzero(points[i] >= 0)
        ys, xs = np.divmod(points[i, clicked], width)
        for ax in axes[:, i]:
            ax.scatter(xs, ys, s=60, c=colours[clicked], edgecolors="black", linewidths=1.2,
                       clip_on=False, zorder=3)
            ax.set_xticks([]), ax.set_yticks([])
    axes[0, 0].set_ylabel("clicks", fontsize=9)
    axes[1, 0].set_ylabel("ground truth", fontsize=9)
    shown = sorted({int(c) for row in points for c in np.flatnonzero(row >= 0)})
    handles = [plt.Line2D([], [], marker="o", linestyle="", markerfacecolor=colours[c],
                          markeredgecolor="black", label=class_set.names[c]) for c in shown]
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 0.0))
    return fig


def class_statistics(sheet: dict):
    """Two bar charts: pixel frequency and presence rate per class, source beside target."""
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
        ax.set_ylim(0, 1.15 * df[col].max())
        ax.legend(fontsize=8, ncol=2, loc="upper center", frameon=False)
    fig.tight_layout()
    return fig


def iou_bars(results: dict, class_names, title: str = "", ylabel: str = "IoU (%)",
             colours: dict | None = None):
    """Grouped bars of a per-class score in %; results: {label: list of C values (NaN =
    absent)}. colours: {label: colour}, so that one stage keeps its colour from figure to
    figure (session.Session.colours); None: seaborn's default cycle. The legend sits under
    the bars, never on them."""
    rows = [{"class": c, "model": label, ylabel: value}
            for label, values in results.items()
            for c, value in zip(class_names, values, strict=True)]
    fig, ax = plt.subplots(figsize=(11, 3.6))
    palette = None if colours is None else {label: colours[label] for label in results}
    sns.barplot(pd.DataFrame(rows), x="class", y=ylabel, hue="model", ax=ax, palette=palette,
                saturation=1)
    ax.set_ylim(0, 100)
    ax.set_xlabel("")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=min(len(results), 3), loc="upper center",
              bbox_to_anchor=(0.5, -0.1), frameon=False)
    fig.tight_layout()
    return fig


def confusion(conf, class_names, title: str = ""):
    """Row-normalised confusion matrix: row = true class, column = predicted class, in %."""
    conf = np.asarray(conf, dtype=float)
    with np.errstate(invalid="ignore"):
        norm = 100 * conf / conf.sum(1, keepdims=True)
    fig, ax = plt.subplots(figsize=(6, 5))
    sns.heatmap(norm, annot=True, fmt=".0f", cmap="Blues", vmin=0, vmax=100, ax=ax,
                xticklabels=class_names, yticklabels=class_names, annot_kws={"size": 7},
                cbar_kws={"label": "% of the true class's pixels"})
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def learning_curves(histories: dict, val_splits: dict | None = None):
    """Training loss and validation mIoU per iteration; histories: {label: history dict},
    val_splits: {label: the split its validation curve is on}."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3))
    for label, h in histories.items():
        loss = np.asarray(h["loss"])
        k = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        axes[0].plot(h["iteration"][k - 1:], smooth, label=label)
        where = f" (on {val_splits[label]})" if val_splits and label in val_splits else ""
        axes[1].plot(h["val_iteration"], h["val_miou"], marker="o", label=label + where)
    axes[0].set(xlabel="iteration", ylabel="training loss (log scale)", yscale="log")
    axes[0].yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    # minor ticks at 2 and 5 only: labels at every minor tick of a log axis collide
    axes[0].yaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2.0, 5.0)))
    axes[0].yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    axes[1].set(xlabel="iteration", ylabel="validation mIoU (%)")
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    return fig


def pooling_figure(image, logits, class_names, classes, absent=(), r: float = 1.0,
                   threshold: float = 0.2, positions: int | None = None):
    """How smooth-max pooling turns a class's logit map into one image-level score: the
    logit maps (B=1: (C, h, w)) of a few classes, on one colour scale, and their mean-,
    max- and smooth-max-pooled probabilities P_c against the threshold T. Classes in
    `absent` are not in the image (a score above T there is a hallucination). `positions`
    is the smooth-max's N (weak_classification.smooth_max_pool; None: h·w)."""
    logits = torch.as_tensor(logits)                      # (C, h, w)
    names = [f"{class_names[c]}" + (" (absent)" if c in absent else "") for c in classes]
    fig, axes = plt.subplots(1, len(classes) + 2, figsize=(2.9 * (len(classes) + 2), 2.9),
                             gridspec_kw={"width_ratios": [1.4] + [1] * len(classes) + [1.6]},
                             layout="constrained")
    axes[0].imshow(_image(image))
    axes[0].set_title("target image", fontsize=9)
    vmax = float(logits[classes].abs().max())
    for ax, c, name in zip(axes[1:-1], classes, names, strict=True):
        shown = ax.imshow(logits[c], cmap="coolwarm", vmin=-vmax, vmax=vmax)
        ax.set_title(f"logits: {name}", fontsize=9, color="C3" if c in absent else "k")
    fig.colorbar(shown, ax=list(axes[1:-1]), orientation="horizontal", fraction=0.08,
                 pad=0.06, label="logit A_c (one scale for all maps)")
    for ax in axes[:-1]:
        ax.set_xticks([]), ax.set_yticks([])
    flat = logits[classes].flatten(1)
    smooth = f"smooth-max (r={r:g}" + (f", N={positions})" if positions else ")")
    pooled = {"mean": flat.mean(1), smooth: smooth_max_pool(logits[classes][None], r,
                                                            positions)[0],
              "max": flat.max(1).values}
    x = np.arange(len(classes))
    bars = axes[-1]
    for k, (name, v) in enumerate(pooled.items()):
        bars.bar(x + 0.27 * (k - 1), torch.sigmoid(v).numpy(), 0.27, label=name)
    bars.axhline(threshold, color="k", lw=0.8, ls="--", label=f"T = {threshold:g}")
    bars.set_xticks(x, names, fontsize=8, rotation=30, ha="right")
    for tick, c in zip(bars.get_xticklabels(), classes, strict=True):
        tick.set_color("C3" if c in absent else "k")
    bars.set(ylabel="P_c", ylim=(0, 1), title="pooled image-level score")
    bars.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    return fig


def presence_bars(results: dict, class_names, metric: str):
    """Per-class presence precision or recall (%); results: {label: {"precision": [...],
    "recall": [...]}}."""
    return iou_bars({k: v[metric] for k, v in results.items()}, class_names,
                    title=f"class-presence {metric} on target test", ylabel=f"{metric} (%)")


ATTENTION_SCALE = (0.0, 1.0)  # α is a share of one class's attention: one scale everywhere


def attention_grid(images, attentions, class_names, classes_per_image, on_class=None,
                   title: str = "", labels=None, absent=None):
    """Each row: a target image, then the attention maps α_c (h, w) of the classes chosen for
    it (analysis.attention_classes), smoothly upsampled over the image on one fixed colour
    scale, ATTENTION_SCALE, in every figure of the series: the share of the class's
    attention that each position gets. labels (N, H, W), when given: each present class's
    ground-truth outline is drawn in cyan. on_class (N, C), when given, is the share (%) of
    α_c on class c's own pixels (analysis.attention_on_class), written under each present
    class's name; absent[r] (a set of class indices) marks the classes image r does not
    contain, titled "absent" instead."""
    n_cols = 1 + max(len(c) for c in classes_per_image)
    fig, axes = plt.subplots(len(images), n_cols, figsize=(2.1 * n_cols, 1.2 * len(images) + 0.6),
                             squeeze=False, layout="constrained")
    for r, (img, att, classes) in enumerate(zip(images, attentions, classes_per_image,
                                                strict=True)):
        axes[r, 0].imshow(_image(img))
        for k, c in enumerate(classes):
            ax, gone = axes[r, k + 1], absent is not None and c in absent[r]
            ax.imshow(_image(img))
            shown = ax.imshow(np.asarray(att[c]), cmap="magma", alpha=0.6,
                              vmin=ATTENTION_SCALE[0], vmax=ATTENTION_SCALE[1],
                              interpolation="bilinear",
                              extent=(-0.5, img.shape[-1] - 0.5, img.shape[-2] - 0.5, -0.5))
            if labels is not None and not gone:
                ax.contour(np.asarray(labels[r]) == c, levels=[0.5], colors="cyan",
                           linewidths=0.7)
            label = (f"{class_names[c]}: absent" if gone else class_names[c]
                     if on_class is None else f"{class_names[c]}: {on_class[r][c]:.0f}% on it")
            ax.set_title(label, fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([]), ax.set_yticks([])
            if not ax.images:
                ax.axis("off")
    fig.colorbar(shown, ax=axes, orientation="horizontal", fraction=0.05, aspect=40,
                 label="attention α (share of the class's attention at each position); cyan: "
                       "the class's pixels")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def feature_projection(panels: dict, class_names, classes):
    """2-D projections of category features: one row per model, {title: (points (N, 2),
    class index (N,), domain (N,) of "source"/"target")}, one column per class, so that no
    class hides another. Hollow circles = source, crosses = target, grey = the other
    classes' features, for context. Each panel zooms on its own class (a class of tight
    features is not squashed by a spread-out one); each row has its model's own principal
    components, so rows are compared by how the two domains sit, not by coordinates."""
    fig, axes = plt.subplots(len(panels), len(classes), squeeze=False,
                             figsize=(2.6 * len(classes), 2.5 * len(panels)))
    for row, (title, (pts, cls, dom)) in zip(axes, panels.items(), strict=True):
        for ax, c in zip(row, classes, strict=True):
            ax.scatter(pts[cls != c, 0], pts[cls != c, 1], s=4, color="0.85",
                       label="other classes")
            for domain, marker, style in (("source", "o", {"facecolors": "none",
                                                           "edgecolors": "C0"}),
                                          ("target", "x", {"color": "C3"})):
                m = (cls == c) & (dom == domain)
                ax.scatter(pts[m, 0], pts[m, 1], s=14, marker=marker, lw=0.8, alpha=0.8,
                           label=domain, **style)
            mine = pts[cls == c]
            if len(mine):
                low, high = mine.min(0), mine.max(0)
                pad = 0.15 * np.maximum(high - low, 1e-6)
                ax.set(xlim=(low[0] - pad[0], high[0] + pad[0]),
                       ylim=(low[1] - pad[1], high[1] + pad[1]))
            ax.tick_params(labelsize=7)
        row[0].set_ylabel(f"{textwrap.fill(title, 22)}\n\nprincipal component 2", fontsize=8)
    for ax, c in zip(axes[0], classes, strict=True):
        ax.set_title(class_names[c], fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("principal component 1", fontsize=8)
    axes[0, -1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    fig.tight_layout()
    return fig


def history_curves(histories: dict, keys: dict, ylabel: str = "", title: str = "",
                   scale: float = 1.0, chance: float | None = None):
    """Logged training quantities over iterations; histories: {label: history dict}, keys:
    {history key: what to call it}; values are multiplied by `scale` (100 for %). Each run
    has its own line style and marker (filled, then hollow) and each quantity its own
    colour, so that curves lying on one another, or a single logged point, stay visible.
    chance: a level drawn dashed and labelled (50 for a discriminator's accuracy). The
    legend sits under the plot, which keeps the full width."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    styles = ["-", "--", ":", "-."]
    for r, (label, h) in enumerate(histories.items()):
        for k, (key, name) in enumerate(keys.items()):
            if key in h:
                ax.plot(h["iteration"], scale * np.asarray(h[key]), styles[r % len(styles)],
                        marker="os^D"[r % 4], markersize=6 - r, color=f"C{k}",
                        markerfacecolor=f"C{k}" if r % 2 == 0 else "none",
                        label=f"{label}: {name}")
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1,
                   label=f"chance ({chance:g})")
    ax.set(xlabel="iteration", ylabel=ylabel, title=title)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2,
              frameon=False)
    fig.tight_layout()
    return fig


def iou_heatmap(results: dict):
    """Per-class mean IoU on target test: stages as rows, classes as columns."""
    stages = results["stages"]
    data = np.array([s["iou_mean"] for s in stages], dtype=float)  # null: NaN
    fig, ax = plt.subplots(figsize=(1 + 0.75 * len(results["classes"]), 0.5 * len(stages) + 1))
    sns.heatmap(data, annot=True, fmt=".0f", cmap="viridis", vmin=0, vmax=100, ax=ax,
                xticklabels=results["classes"], yticklabels=[s["title"] for s in stages],
                annot_kws={"size": 8}, cbar_kws={"label": "IoU (%)"})
    ax.set_title(f"per-class IoU on target test, mean over seeds {results['seeds']}")
    fig.tight_layout()
    return fig


def annotation_cost(results: dict, annotation: dict):
    """The analogue of the paper's Figure 1: accuracy against annotation cost per target
    image, ours and the paper's; left in mIoU, right in share of the gap closed.
    annotation: {stage: (what a person provides, seconds per image)}, ordered by cost. The
    x-axis is seconds on a log scale; no annotation (UDA, 0 s) sits at a marked zero."""
    by_name = {s["stage"]: s for s in results["stages"]}
    names = [n for n in annotation if n in by_name]
    seconds = [annotation[n][1] for n in names]
    zero = min(s for s in seconds if s > 0) / 100   # where 0 s is drawn, two decades left
    x = [s if s > 0 else zero for s in seconds]
    ticks = [f"{textwrap.fill(annotation[n][0], 14)}\n{_duration(annotation[n][1])}"
             for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.9))
    for ax, (ours, paper, label) in zip(axes, [("miou_mean", "paper_miou", "mIoU (%)"),
                                               ("gap_closed_mean", "paper_gap_closed",
                                                "source → oracle gap closed (%)")],
                                        strict=True):
        paid = [k for k, s in enumerate(seconds) if s > 0]  # no line across the axis break
        for key, style, what in ((ours, "o-", "ours (embedded benchmark)"),
                                 (paper, "s--", "paper (GTA5 → Cityscapes)")):
            y = [by_name[n][key] for n in names]
            err = ([by_name[n][ours.replace("mean", "std")] for n in names] if key == ours
                   else None)
            line = ax.errorbar(x, y, yerr=err, fmt=style[0], capsize=3, label=what)
            ax.plot([x[k] for k in paid], [y[k] for k in paid], style[1:],
                    color=line[0].get_color())
        ax.set_xscale("log")
        ax.set_xticks(x, ticks, fontsize=8)
        ax.minorticks_off()
        for k, tick in enumerate(ax.get_xticklabels()):  # 30 s and 45 s sit close: part them
            if k + 1 < len(x) and x[k + 1] < 2 * x[k]:
                tick.set_horizontalalignment("right")
            elif k > 0 and x[k] < 2 * x[k - 1]:
                tick.set_horizontalalignment("left")
        ax.axvline(zero * 2, color="0.6", lw=0.8, ls=":")   # the break between 0 and > 0
        ax.set(xlabel="annotation time per target image (log scale; 0 s drawn at the left)",
               ylabel=label)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def weak_label_tracking(history: dict, class_names):
    """How the pseudo-weak labels evolve during adaptation, from a run's logged history
    (training.engine.weak_label_log): left, micro precision and recall (%) against the GT image
    labels; middle, mean P_c of truly present and truly absent classes, and the mean logit;
    right, per-class precision (%), each class's share of images that truly contain it
    drawn dashed: a precision that falls to that share means "present in every image"."""
    it = np.asarray(history["iteration"])
    tp, labelled, true = (np.asarray(history[k], dtype=float)      # (steps, C) shares
                          for k in ("pseudo_tp", "pseudo_labelled", "pseudo_true"))
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.4))
    axes[0].plot(it, history["pseudo_precision"], marker="o", ms=3, label="precision")
    axes[0].plot(it, history["pseudo_recall"], marker="s", ms=3, label="recall")
    axes[0].set(xlabel="adaptation step", ylabel="%", ylim=(0, 102),
                title="pseudo-weak labels vs GT image labels")
    axes[0].legend(fontsize=8)
    axes[1].plot(it, 100 * np.asarray(history["score_present"]), label="P_c, class present")
    axes[1].plot(it, 100 * np.asarray(history["score_absent"]), label="P_c, class absent")
    axes[1].set(xlabel="adaptation step", ylabel="mean P_c (%)", ylim=(0, 102),
                title="image-level scores")
    twin = axes[1].twinx()
    twin.plot(it, history["mean_logit"], color="C2", ls=":", label="mean logit (right)")
    twin.set_ylabel("mean logit")
    lines = axes[1].get_legend_handles_labels()
    extra = twin.get_legend_handles_labels()
    axes[1].legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=8, loc="lower right")
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = 100 * tp / labelled
    for c, name in enumerate(class_names):
        line, = axes[2].plot(it, precision[:, c], lw=1, label=name)
        axes[2].axhline(100 * true[:, c].mean(), color=line.get_color(), lw=0.8, ls="--")
    axes[2].set(xlabel="adaptation step", ylabel="precision (%)", ylim=(0, 102),
                title="per class (dashed: share of images with the class)")
    axes[2].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def score_histograms(distributions: dict):
    """Histograms of P_c (%) for truly present and truly absent (image, class) pairs, one
    panel per model; distributions: {model: {"present": [...], "absent": [...]}}. The
    collapse shows as the absent pairs' mass moving above the threshold."""
    fig, axes = plt.subplots(1, len(distributions), figsize=(4.6 * len(distributions), 3.1),
                             sharey=True, squeeze=False)
    bins = np.linspace(0, 100, 26)
    for ax, (model, d) in zip(axes[0], distributions.items(), strict=True):
        for kind, colour in (("present", "C0"), ("absent", "C3")):
            values = np.asarray(d[kind])
            ax.hist(values, bins, weights=np.full(len(values), 100 / max(len(values), 1)),
                    alpha=0.6, color=colour, label=f"class {kind} ({len(values)} pairs)")
        ax.set(title=model, xlabel="P_c (%)")
        ax.legend(fontsize=8, loc="upper center")
    axes[0, 0].set_ylabel("share of pairs (%)")
    fig.tight_layout()
    return fig


def study_bars(study: dict):
    """Target val mIoU of every probe of the weak-label study (study.py), grouped as
    references, drivers, candidate fixes and the λ_cw x length grid, one colour each."""
    rows = [(name, r["target_val_miou"], "C7") for name, r in study["references"].items()]
    rows += [(r["name"], r["target_val_miou"], "C0") for r in study["drivers"]]
    rows += [(r["name"], r["target_val_miou"], "C2") for r in study["candidates"]]
    rows += [(f"+ category-wise, λ_cw = {r['lambda_cw']:g}, {r['iterations']} steps",
              r["target_val_miou"], "C1") for r in study["grid"]]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(rows) + 1))
    y = np.arange(len(rows))[::-1]
    ax.barh(y, [r[1] for r in rows], color=[r[2] for r in rows])
    for yy, (_, v, _) in zip(y, rows, strict=True):
        ax.text(v + 0.2, yy, f"{v:.1f}", va="center", fontsize=7)
    ax.set_yticks(y, [r[0] for r in rows], fontsize=7)
    # bars start at 0: a cut axis would make differences of a point look like halvings
    ax.set(xlim=(0, max(r[1] for r in rows) + 6), xlabel="target val mIoU (%)",
           title=f"weak-label study, seed {study['seed']} (grey: references, blue: one factor "
                 f"changed, green: fixes, orange: grid)")
    ax.title.set_fontsize(8)
    fig.tight_layout()
    return fig


def strength_response(record: dict, names=None):
    """The dose-response of each adversarial term (mechanisms.py): per term (a row) its
    target val mIoU, its discriminator's accuracy over the last 100 steps and the category
    features' domain separation against the term's weight (log axis). Dashed: the same loop
    with the term off, its control; dotted grey: AdaBN (source-only with target BatchNorm
    statistics, nothing trained); the vertical line marks the paper's weight and a ring the
    weight the rule chose. `names`: only the terms of these names."""
    terms = [t for t in record["terms"] if names is None or t["name"] in names]
    fig, axes = plt.subplots(len(terms), 3, figsize=(11, 3.0 * len(terms)), squeeze=False)
    adabn = record["references"]["adabn"]["target_val_miou"]
    panels = (("target_val_miou", "target val mIoU (%)"),
              ("disc_accuracy", "discriminator accuracy (%)"),
              ("separation", "domain separation of F_c"))
    for row, t in zip(axes, terms, strict=True):
        x = [p["strength"] for p in t["points"]]
        for ax, (key, label) in zip(row, panels, strict=True):
            y = [p.get(key, np.nan) for p in t["points"]]
            ax.plot(x, y, "o-", color="C0")
            off = t["off_scores"].get(key)
            if off is not None:
                ax.axhline(off, ls="--", color="C3", label="term off (control)")
            if key == "target_val_miou":
                ax.axhline(adabn, ls=":", color="0.5", label="AdaBN, nothing trained")
                if t["chosen"]:
                    chosen = next(p for p in t["points"] if p["strength"] == t["chosen"])
                    ax.plot(t["chosen"], chosen[key], "o", ms=12, mfc="none", color="C2",
                            label="chosen on val")
            if key == "disc_accuracy":
                ax.axhline(50, ls=":", color="0.5", label="chance")
            ax.axvline(t["paper"], color="0.7", lw=0.8)
            ax.set_xscale("log")
            ax.set(xlabel=t["field"].split(".")[-1].replace("lambda_", "λ_"), ylabel=label)
            ax.set_title(t["name"], fontsize=9)
            ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"each adversarial term over its weight, seed {record['seed']} (vertical "
                 f"line: the paper's weight)", fontsize=9)
    fig.tight_layout()
    return fig
