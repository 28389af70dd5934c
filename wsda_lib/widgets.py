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
