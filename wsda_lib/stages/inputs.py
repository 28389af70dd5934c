"""What an adaptation stage trains on besides the benchmark's splits: the starting model's
pseudo-weak labels, clicked points, self-training's pixel pseudo labels (written to files) and
translated source images."""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path

import numpy as np

from wsda_lib.core import distributed
from wsda_lib.core.config import Config
from wsda_lib.data.splits import InMemorySplit, LabelFiles, WithItems
from wsda_lib.data.translated import TranslatedSource
from wsda_lib.method.adabn import target_statistics
from wsda_lib.method.point_supervision import ItemPoints, sample_points
from wsda_lib.method.weak_classification import Pooling
from wsda_lib.stages.keys import pseudo_label_key
from wsda_lib.training.evaluate import class_presence, presence_scores
from wsda_lib.training.pseudo_labels import (
    PSEUDO_LABEL_RECORD,
    pseudo_label_file,
    pseudo_label_folder,
    write_pseudo_labels,
)


def adaptation_data(cfg: Config, benchmark, model, seed: int, device, work_dir=None):
    """The source and target training splits an adaptation stage trains on, with what its
    switches add: clicked points and pixel pseudo labels on the target items, translated
    images on the source items, and, with adapt.pseudo_weak_from="start", the starting
    model's pseudo-weak labels, frozen. Returns (source, target, metrics of the labels).

    Points are drawn per image as it is read (method.point_supervision; the embedded
    benchmark keeps its whole-split draw); pixel pseudo labels
    are written as PNGs to `work_dir`, by default benchmark.cache_dir/pseudo_labels/<key of
    the weights, config and seed> (training.pseudo_labels.pseudo_label_folder), and read back
    per item."""
    a = cfg.adapt
    source, target, metrics, extras = benchmark["source_train"], benchmark["target_train"], {}, {}
    if a.weak_labels == "pseudo":
        labels, metrics["pseudo_weak_start"] = pseudo_weak_quality(model, target, cfg, device)
        if a.pseudo_weak_from == "start":
            extras["pseudo_weak"] = labels
    if a.weak_labels == "point":  # clicks given (data.points), else drawn from the labels
        extras["points"] = (target.points if getattr(target, "points", None) is not None else
                            sample_points(target.labels_array(), target.weak_labels, seed)
                            if isinstance(target, InMemorySplit) else ItemPoints(seed))
    if a.self_training:
        # keyed by the trained weights and pseudo_label_key: the same on every rank,
        # whatever the re-estimation's last bits
        folder = Path(work_dir or pseudo_label_folder(benchmark.cache_dir, model, target,
                                                      pseudo_label_key(cfg), seed))

        def write():  # the labeller is made only when the labels are not written yet
            labeller = model if (folder / PSEUDO_LABEL_RECORD).is_file() else \
                pseudo_label_model(model, cfg, target, device)
            return write_pseudo_labels(labeller, target, a, device, folder,
                                       cfg.train.eval_batch_size)

        # Under torchrun every rank holds the same weights: the first rank to take the lock
        # beside the folder writes the labels, the others wait on the lock (not in a
        # collective, which would time out on a large split), then read its record.
        done = distributed.once(folder.parent / f".{folder.name}.lock", write)
        extras["pseudo_label"] = LabelFiles(len(target), partial(pseudo_label_file, folder))
        metrics.update(pseudo_labels=done["quality"], thresholds=done["thresholds"])
    if extras:
        target = WithItems(target, **extras)
    if a.pixel_adaptation and a.translated_source_dir:
        source = TranslatedSource(source, a.translated_source_dir)
    return source, target, metrics


def pseudo_label_model(model, cfg: Config, split, device):
    """The network self-training's pixel pseudo labels of `split` are made with:
    `model` itself (adapt.st_label_statistics "running": its BatchNorm running statistics,
    as trained), or a copy with those statistics re-estimated on `split` ("target",
    method.adabn). `model` is never changed."""
    if cfg.adapt.st_label_statistics == "running":
        return model
    labeller = copy.deepcopy(model)
    target_statistics(labeller, split, device, cfg.train.eval_batch_size)
    return labeller


def pseudo_weak_quality(model, split, cfg: Config, device) -> tuple[np.ndarray, dict]:
    """The model's pseudo-weak labels (N, C) on every image of `split` (eval mode, P_c > T as
    cfg.adapt sets them), and their micro precision and recall (%) against the split's GT
    image labels, which are read only to report this. The model is left in train mode."""
    a = cfg.adapt
    scores, truth = class_presence(model, split, device, Pooling.from_config(a),
                                   cfg.train.eval_batch_size)
    model.train()
    labels = (scores > a.pseudo_threshold).astype(np.float32)
    if truth is None:  # a target without image-level labels: nothing to measure against
        return labels, {}
    quality = presence_scores(labels.ravel()[:, None], truth.ravel()[:, None])
    return labels, {k: v[0] for k, v in quality.items()}
