"""Everything that can be checked before a stage trains (`check_before_training`): the
resolved configs of its chain, the files they name, the splits' files and labels, that every
module runs at the configured image sizes, and room on disk. Errors name the stage, the field,
the file or the folder."""

from __future__ import annotations

from pathlib import Path

import torch

from wsda_lib.core.config import AdaptConfig, Config, override
from wsda_lib.data import SPLIT_NAMES
from wsda_lib.data.checks import check_split_files
from wsda_lib.data.files import image_size
from wsda_lib.data.translated import TranslatedSource
from wsda_lib.method.category_alignment import category_features
from wsda_lib.method.objective import Discriminators, LossWeights
from wsda_lib.method.output_alignment import output_probabilities
from wsda_lib.stages.checkpoints import build_model
from wsda_lib.stages.keys import SELF_TRAINING_FIELDS
from wsda_lib.stages.registry import EVAL_SPLITS, resolved_chain, stage
from wsda_lib.training import runs


def check_chain_uses(name: str, cfg: Config) -> None:
    """Settings that no stage of `name`'s chain reads are refused by name rather than
    silently ignored: adapt.translated_source_dir without a stage that restyles source images
    (pixel adaptation), the same for adapt.restyle other than "fda", and a self-training
    field away from its default (SELF_TRAINING_FIELDS) without a stage that self-trains.
    Raises ValueError."""
    a, configs = cfg.adapt, resolved_chain(name, cfg)
    restyles = any(c.adapt.pixel_adaptation for c in configs.values())
    if configs[name].adapt.restyle != "fda" and not restyles:
        raise ValueError(f"adapt.restyle={configs[name].adapt.restyle!r}: no stage "
                         f"of {' -> '.join(configs)} uses pixel adaptation, so no image "
                         f"would be restyled; choose a stage with it (uda_pixel, uda_colour, "
                         f"...) or leave the field at 'fda'")
    self_trains = any(c.adapt.self_training for c in configs.values())
    changed = [f"adapt.{f}" for f in SELF_TRAINING_FIELDS
               if getattr(a, f) != getattr(AdaptConfig(), f)]
    if changed and not self_trains:
        raise ValueError(f"{', '.join(changed)}: no stage of {' -> '.join(configs)} "
                         f"self-trains, so the setting would not be read; choose a stage with "
                         f"self-training (uda_self_training, wda_self_training) or leave it at "
                         f"its default")
    if a.translated_source_dir and not restyles:
        raise ValueError(f"adapt.translated_source_dir={a.translated_source_dir!r}: no stage "
                         f"of {' -> '.join(configs)} uses pixel adaptation, so the "
                         f"translated images would not be read; choose a stage with it "
                         f"(uda_pixel, wda_image, ...) or leave the field unset")


def check_before_training(name: str, cfg: Config, benchmark, run_root) -> None:
    """Everything that can be checked before stage `name` (and the stages it starts from)
    trains: every stage's resolved config, the files the configs name (initial weights,
    translated source images), every split's image formats and the label values of the
    evaluation splits and, when a stage reads them, target train (data.checks; recorded in
    the cache folder once passed), that every module of each stage runs at the configured
    image sizes (`check_sizes`), and that `run_root` can be written and has room for the
    checkpoints. Errors (ValueError, DatasetError, FileNotFoundError) name the stage, field, file or
    folder."""
    # Target train's labels are read by an adaptation stage (the weak labels' quality, WDA's
    # image labels and points) and by the oracle; source train's by the typical class areas.
    configs = resolved_chain(name, cfg)
    if any(c.train.tensorboard for c in configs.values()):
        check_tensorboard()
    reads_target = any(stage(each).start_from or c.train.split == "target_train"
                       for each, c in configs.items())
    for split in SPLIT_NAMES:
        labels = split in EVAL_SPLITS or (split == "target_train" and reads_target)
        check_split_files(benchmark[split], split, labels, benchmark.cache_dir)
    for each, stage_cfg in configs.items():
        check_sizes(each, stage_cfg, benchmark)
        weights = stage_cfg.model.backbone_weights
        if weights and not Path(weights).is_file():
            raise FileNotFoundError(f"model.backbone_weights={weights!r}: no such file "
                                    f"(the ImageNet initialisation of stage {each!r})")
        a = stage_cfg.adapt
        if stage(each).start_from and a.pixel_adaptation and a.translated_source_dir:
            TranslatedSource(benchmark["source_train"], a.translated_source_dir).check()
    check_target_labels(configs, benchmark["target_train"])
    runs.check_writable(run_root, need_bytes=_checkpoint_bytes(configs[name],
                                                               benchmark.class_set))


def check_tensorboard() -> None:
    """train.tensorboard needs the `tensorboard` package (an optional extra); raises
    ImportError saying how to install it, before anything trains."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ImportError("train.tensorboard=True needs the tensorboard package: install the "
                          "extra with .venv/bin/pip install -e '.[tensorboard]'") from None


def check_target_labels(configs: dict[str, Config], target) -> None:
    """Each stage of a chain ({stage: its resolved config}, `resolved_chain`) has the target
    train labels it trains on: pixel labels for the oracle, image-level labels for WDA
    (data.image_labels, or label maps), points or label maps to draw them from for WDA with
    points. Raises ValueError naming the stage and the field."""
    for each, c in configs.items():
        if c.train.split == "target_train" and not stage(each).start_from and \
                not target.has_pixel_labels:
            raise ValueError(f"stage {each!r} trains on target train's pixel labels, and "
                             f"target train has none (no ann_dir/train in data.target_root="
                             f"{c.data.target_root!r})")
        if stage(each).start_from and c.adapt.weak_labels in ("image", "point") and \
                not target.has_image_labels:
            raise ValueError(f"stage {each!r} trains on target train's image-level labels, "
                             f"and target train has none: give data.image_labels (a CSV of "
                             f"image,class[,class...]) or label maps in ann_dir/train")
        if stage(each).start_from and c.adapt.weak_labels == "point" and \
                target.points is None and not target.has_pixel_labels:
            raise ValueError(f"stage {each!r} trains on clicked points, and target train has "
                             f"neither data.points (a CSV of image,class,x,y) nor label maps "
                             f"to draw them from")


def input_size(split) -> tuple[int, int]:
    """(H, W) of the images `split` feeds the network: its resize size, else the first image
    file's size (from the header), else the first in-memory image's."""
    size = getattr(split, "size", None)
    if size:
        return int(size[1]), int(size[0])
    if getattr(split, "pairs", None):
        width, height = image_size(split.pairs[0][0])
        return height, width
    return tuple(split[0]["image"].shape[-2:])


def _size_fields(cfg: Config, domain: str) -> str:
    if cfg.data.dataset == "embedded":
        return f"data.height={cfg.data.height}, data.width={cfg.data.width}"
    size = cfg.data.source_size if domain == "source" else cfg.data.target_size
    return f"data.{domain}_size={size}"


def check_sizes(name: str, cfg: Config, benchmark) -> None:
    """Stage `name`'s network and discriminators run on both domains' images at the sizes
    they are read at, checked on the meta device (shapes only: no memory, no arithmetic).
    Raises ValueError naming the stage, the module, the size and the config fields that set
    it; e.g. the output-space discriminator's five 4x4 stride-2 convolutions need 32 px a
    side."""
    a = cfg.adapt
    with torch.device("meta"):
        model = build_model(override(cfg, **{"model.backbone_weights": None}),
                            benchmark.class_set).eval()
        discs = Discriminators(LossWeights.from_config(a), benchmark.class_set.num_classes,
                               model.feature_dim, a.output_disc_width, a.category_disc_hidden
                               ) if stage(name).start_from else None
        for domain in ("source", "target"):
            h, w = input_size(benchmark[f"{domain}_train"])
            what = "the segmentation network"
            try:
                logits, feats = model(torch.empty(2, 3, h, w))
                if discs is not None and discs.output is not None:
                    what = ("the output-space discriminator (adapt.output_alignment; five 4x4 "
                            "convolutions of stride 2 need at least 32 px a side)")
                    discs.output(output_probabilities(logits, (h, w)))
                if discs is not None and discs.category is not None:
                    what = "the category-wise discriminators (adapt.category_alignment)"
                    discs.category(category_features(logits, feats))
            except RuntimeError as e:
                raise ValueError(f"stage {name!r}: {what} cannot run on {domain} images of "
                                 f"{w}x{h} px (width x height; {_size_fields(cfg, domain)}): "
                                 f"{e}") from None


def _checkpoint_bytes(cfg: Config, class_set) -> int:
    """About the disk a run of `cfg` needs: its resume checkpoint (the network with its
    optimiser's state, the discriminators with Adam's two), a temporary copy of it while it
    is written, and the final checkpoint. Sizes from modules built on the meta device, which
    allocates nothing."""
    def nbytes(module):
        return sum(p.numel() * p.element_size() for p in module.parameters())

    with torch.device("meta"):
        model = build_model(override(cfg, **{"model.backbone_weights": None}), class_set)
        discs = Discriminators(LossWeights.from_config(cfg.adapt), class_set.num_classes,
                               model.feature_dim, cfg.adapt.output_disc_width,
                               cfg.adapt.category_disc_hidden)
    states = 3 if cfg.train.optimizer == "adam" else 2
    resume = states * nbytes(model) + 3 * nbytes(discs)
    return 2 * resume + nbytes(model) + 2**20
