"""ipywidgets explorers, each with a static fallback for headless runs (papermill, CI) or when
INTERACTIVE is off."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def attention_explorer(images, attentions, class_names, interactive: bool = True):
    """Browse per-class attention maps: a slider over images, a dropdown over classes.

    images (N, 3, H, W), attentions (N, C, h, w). Returns the widget; when not interactive
    (headless runs) or ipywidgets is missing, says so and returns None: the notebook's
    static attention figure stands in for it.
    """
    if interactive:
        try:
            import ipywidgets as w  # optional at run time: headless runs do without
        except ImportError:
            interactive = False
    if not interactive:
        print("(no interactive explorer here: the figure below shows the attention maps of "
              "three of these images)")
        return None

    def show(index, class_name):
        c = list(class_names).index(class_name)
        img = np.asarray(images[index]).transpose(1, 2, 0)
        fig, axes = plt.subplots(1, 2, figsize=(8, 2.4))
        axes[0].imshow(img)
        axes[1].imshow(img, alpha=0.6)
        axes[1].imshow(np.asarray(attentions[index][c]), cmap="magma", alpha=0.6,
                       extent=(-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5))
        axes[1].set_title(f"attention of {class_name}")
        for ax in axes:
            ax.set_xticks([]), ax.set_yticks([])
        plt.show()

    return w.interactive(show, index=w.IntSlider(0, 0, len(images) - 1, description="image"),
                         class_name=w.Dropdown(options=list(class_names), description="class"))


def presence_at(logits, truth, r: float = 1.0, threshold: float = 0.2,
                positions: int | None = None) -> dict:
    """Image-level scores P_c (N, C) of `logits` (N, C, h, w) pooled by smooth-max with r
    over `positions` (None: the map's h·w; docs/method.md §3), the presence labels
    P_c > threshold, and their micro precision and recall (%) against `truth` (N, C) 0/1."""
    import torch

    from wsda_lib.method.weak_classification import Pooling, image_class_scores
    from wsda_lib.training.evaluate import presence_precision_recall

    scores = image_class_scores(torch.as_tensor(logits), Pooling(r, positions))
    labels = (scores > threshold).float()
    precision, recall = presence_precision_recall(labels, torch.as_tensor(truth).float())
    return {"scores": scores, "labels": labels, "precision": precision, "recall": recall}


def presence_explorer(logits, truth, class_names, interactive: bool = True):
    """Sliders for smooth-max's r, the threshold T and the positions N of the pooling over
    a model's logits (N, C, h, w) on labelled images (truth (N, C)): the first image's P_c
    per class against T, and the presence labels' micro precision and recall over all the
    images. Seconds per move, nothing trains. Headless, or without ipywidgets: a table of
    precision and recall at a few T and N, r = 1, instead."""
    if interactive:
        try:
            import ipywidgets as w
        except ImportError:
            interactive = False
    if not interactive:
        import pandas as pd

        hw = int(np.prod(np.shape(logits)[-2:]))
        rows = {(f"N = {n or hw}", t): presence_at(logits, truth, 1.0, t, n)
                for n in (None, 8385) for t in (0.1, 0.2, 0.5, 0.9)}
        return pd.DataFrame({k: {"precision (%)": v["precision"], "recall (%)": v["recall"]}
                             for k, v in rows.items()}).T.round(1)

    def show(r, threshold, positions):
        p = presence_at(logits, truth, r, threshold, positions or None)
        fig, ax = plt.subplots(figsize=(8, 2.6))
        colours = ["C2" if t else "C3" for t in np.asarray(truth[0])]
        ax.bar(list(class_names), p["scores"][0].numpy(), color=colours)
        ax.axhline(threshold, color="k", linestyle="--", linewidth=1)
        ax.set(ylim=(0, 1), ylabel="P_c", title=f"image 0 (green: present, red: absent); "
               f"all {len(truth)} images: precision {p['precision']:.0f}%, recall "
               f"{p['recall']:.0f}%")
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        plt.show()

    hw = int(np.prod(np.shape(logits)[-2:]))
    return w.interactive(show, r=w.FloatSlider(1.0, min=0.25, max=10, step=0.25),
                         threshold=w.FloatSlider(0.2, min=0.05, max=0.95, step=0.05,
                                                 description="T"),
                         positions=w.Dropdown(options=[(f"h·w = {hw}", 0), ("8385", 8385)],
                                              description="N"))


def strength_rows(record: dict, name: str) -> list[dict]:
    """The dose-response of one adversarial term of a mechanisms record (figures/
    mechanisms.json, term `name`): one row per strength, the term off (strength 0) first,
    with target val mIoU (%), the discriminator's accuracy over the last 100 steps (%; None
    with the term off, as no discriminator is trained) and the category features' domain
    separation. Raises KeyError naming the record's terms when `name` is not one of them."""
    terms = {t["name"]: t for t in record["terms"]}
    if name not in terms:
        raise KeyError(f"no term {name!r} in the mechanisms record; it has {sorted(terms)}")
    t = terms[name]
    return [{"strength": p.get("strength", 0.0), "target val mIoU": p["target_val_miou"],
             "discriminator accuracy (%)": p.get("disc_accuracy"),
             "domain separation": p["separation"]}
            for p in [t["off_scores"], *t["points"]]]


def strength_explorer(record: dict, name: str, interactive: bool = True):
    """A slider over the weights of term `name` in a mechanisms record (nothing trains: every
    point is a cached run of `make study`): the three curves of plots.strength_response with
    the chosen weight marked, and its numbers in the title. Headless, or without ipywidgets:
    the same numbers as a table (strength_rows)."""
    rows = strength_rows(record, name)
    if interactive:
        try:
            import ipywidgets as w
        except ImportError:
            interactive = False
    if not interactive:
        import pandas as pd

        return pd.DataFrame(rows).set_index("strength").round(2)
    on = rows[1:]

    def show(strength):
        row = next(r for r in rows if r["strength"] == strength)
        fig, axes = plt.subplots(1, 3, figsize=(11, 2.8))
        keys = ("target val mIoU", "discriminator accuracy (%)", "domain separation")
        for ax, key in zip(axes, keys, strict=True):
            ax.plot([r["strength"] for r in on], [r[key] for r in on], "o-", color="C0")
            if rows[0][key] is not None:
                ax.axhline(rows[0][key], ls="--", color="C3", label="term off")
            if strength and row[key] is not None:
                ax.plot(strength, row[key], "o", ms=12, mfc="none", color="C2")
            ax.set(xscale="log", xlabel="weight", ylabel=key)
        accuracy = ("—" if row["discriminator accuracy (%)"] is None
                    else f"{row['discriminator accuracy (%)']:.0f}%")
        fig.suptitle(f"{name} at {'off' if not strength else f'{strength:g}'}: target val "
                     f"{row['target val mIoU']:.1f} mIoU, discriminator {accuracy} right, "
                     f"separation {row['domain separation']:.2f}", fontsize=10)
        fig.tight_layout()
        plt.show()

    options = [("off", 0.0)] + [(f"{r['strength']:g}", r["strength"]) for r in on]
    return w.interactive(show, strength=w.SelectionSlider(options=options, value=0.0,
                                                          description="weight"))
