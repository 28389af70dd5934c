"""All settings in one place: dataclasses for data, model and training, and named presets.

A stage's resolved config (a plain dict from `to_dict`) keys its run directory and is saved
beside its checkpoint, so every number can be traced to the settings that made it.

Presets of the embedded benchmark:
* smoke:   seconds; for tests and a quick look. Numbers mean nothing.
* default: minutes on a 2-core CPU; what `make reproduce` runs and the README reports.
* full:    longer training and more data; closer to converged.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from dataclasses import dataclass, field


@dataclass
class DataConfig:
    dataset: str = "embedded"          # "embedded", a source dataset: "gta5" | "synthia", or
    # "folders": any two domains in folders (data/folders.py), source_root and target_root
    height: int = 64                   # image size; 64x128 keeps a CPU epoch in seconds
    width: int = 128
    # Images per split. Target-train labels are hidden from adaptation; target_val is the
    # only target split that tuning may look at; target_test is reported, never tuned on.
    sizes: dict = field(default_factory=lambda: {
        "source_train": 2000, "source_val": 200,
        "target_train": 2000, "target_val": 200, "target_test": 500})
    seed: int = 0                      # the benchmark's own seed: fixed across training seeds,
    # so that a change of SEED changes the training alone
    weak_label_fraction: float = 0.1   # "present" = more than 10% of a typical area (paper code)
    # Real datasets only (paper presets); the target is Cityscapes.
    source_root: str | None = None     # GTA5 or SYNTHIA folder (part of the run's key)
    target_root: str | None = None     # Cityscapes folder
    val_count: int = 500               # images of each training set held out for validation
    # The class protocol of the real datasets: 19 (GTA5), 16 or 13 (SYNTHIA), docs/method.md
    # §10. None for the embedded benchmark, whose ten classes are its own. The number of
    # classes everywhere else is read from the loaded class set, never from here.
    class_protocol: int | None = None
    source_size: tuple | None = None   # (width, height) source images are resized to
    # (width, height) target *training* images are resized to. Target val and test keep their
    # labels at native resolution and logits are upsampled to them (2048x1024 for Cityscapes).
    target_size: tuple | None = None
    # "folders" only: the class file (JSON) that maps both domains' label values to one class
    # list; None: target_root/classes.json.
    classes: str | None = None
    # "folders" only: target train's image-level labels and clicked points as CSV files
    # (data/tags.py): image,class[,class...] and image,class,x,y. None: derived from
    # target train's label maps (ann_dir/train), which are then required for WDA.
    image_labels: str | None = None
    points: str | None = None
    # "folders" only, as mmsegmentation names them: what ends an image's name (None: .png,
    # .jpg or .jpeg) and what replaces it to name its label, e.g. "_leftImg8bit.png" and
    # "_gtFine_labelIds.png" for Cityscapes' own tree copied into img_dir/ and ann_dir/.
    img_suffix: str | None = None
    seg_map_suffix: str = ".png"


@dataclass
class ModelConfig:
    backbone: str = "slim"             # "slim" (CPU) | "resnet50" | "resnet101" (paper)
    base_width: int = 16               # slim only: channels of the first stage (64 = ResNet-18)
    # ASPP dilations. The paper's (6, 12, 18, 24) are for a 1/8 map of ~128x64 positions; the
    # embedded 64x128 images give an 8x16 map, so the rates are scaled down by about 6.
    aspp_rates: tuple = (1, 2, 3, 4)
    legacy_aspp: bool = False          # True: the inherited quirk, only the first two branches
    # BatchNorm in eval mode (running statistics) with frozen affine weights, in training too.
    # From scratch cannot; no preset does it (the released code does not).
    freeze_bn: bool = False
    # Only BatchNorm's affine weights frozen; statistics in training mode (per batch, running
    # statistics updated by every batch, source and target alike): the released code's
    # BatchNorm, which the paper presets follow.
    freeze_bn_affine: bool = False
    backbone_weights: str | None = None  # local path of ImageNet weights; never downloaded


@dataclass
class TrainConfig:
    iterations: int = 3000             # fixed budget; the final model is kept (no selection)
    poly_horizon: int | None = None    # iterations the poly decay spans; None = iterations
    batch_size: int = 8
    optimizer: str = "adam"            # "sgd" (paper) | "adam" (from-scratch slim models)
    lr: float = 1e-3
    momentum: float = 0.9              # SGD momentum; Adam beta1
    weight_decay: float = 5e-4         # paper value
    # The paper's classifier runs at 10x the lr of an ImageNet-pretrained backbone. The slim
    # model trains from scratch, where a 10x head only makes the first steps unstable.
    head_lr_mult: float = 1.0
    poly_power: float = 0.9            # lr = base * (1 - it / iterations) ** power
    grad_clip: float | None = 10.0     # max global grad norm; None disables
    eval_every: int = 500              # iterations between validation evaluations
    eval_batch_size: int = 32
    # Iterations between resume checkpoints of a run in progress (runs.Resume); None: none.
    # Not part of a run's key: a resumed run ends as an uninterrupted one does.
    checkpoint_every: int | None = 500
    # Also write the logged curves (each term's mean per log interval, the learning rate, the
    # validation mIoU) as TensorBoard events, into <run dir>/tensorboard (one per run key);
    # needs the `tensorboard` extra. Not part of a run's key: it changes no result.
    tensorboard: bool = False
    # Worker processes that read and decode the training images beside the step (torch's
    # DataLoader, pinned memory on CUDA) for splits read from files; 0: in the training
    # process. The batches, their order and a resumed run's are the same whatever the
    # number, so it is not part of a run's key. The embedded benchmark, held in memory,
    # always uses the training process.
    workers: int = 0
    # Numerics of the training steps. "bf16": forward passes and losses under torch.autocast
    # in bfloat16 (weights, gradients and optimiser states stay fp32), so the online
    # pseudo-weak labels, thresholded from the training forward pass, come from bf16 logits.
    # channels_last: the network, the discriminators and the input batches in NHWC memory
    # format, also during the validation along the way (in fp32). The final scores, the
    # checkpoints and self-training's pixel pseudo labels see the fp32, contiguous model.
    # Both change the weights a run ends with, so they join its key when not at these
    # defaults (`key_config`).
    precision: str = "fp32"
    channels_last: bool = False
    # The labelled split supervised training learns from: "source_train" (source-only) or
    # "target_train" (the oracle). Its learning curve is drawn on the matching val split.
    split: str = "source_train"


WEAK_LABEL_SOURCES = ("none", "pseudo", "image", "point", "present")


@dataclass
class AdaptConfig:
    """Adaptation is a configuration of one loop: which terms are on, their weights, and
    where the target's weak labels come from. A stage (stages/registry.py) sets the switches; the
    defaults are the paper's UDA recipe without pixel adaptation (docs/method.md §7)."""

    # The switches. A term that is off is not computed, and its discriminator not built.
    # Where the target's weak labels come from: "none"; "pseudo" (UDA: the model's own
    # pseudo-weak labels); "image" (WDA: human image labels); "point" (WDA: image labels
    # and one clicked point per present class, whose cross-entropy adds λ_point·L_point);
    # "present" (a control, not a method: every class labelled present in every image).
    weak_labels: str = "pseudo"
    output_alignment: bool = True      # λ_adv·L_adv, output space (AdaptSegNet)
    weak_loss: bool = True             # λ_c·L_c, weak-label classification
    category_alignment: bool = True    # λ_cw·L_adv^C, category-wise alignment
    pixel_adaptation: bool = False     # restyled source images (translated, or FDA stand-in)
    # One round of weak-label-filtered pixel pseudo labels, λ_st·L_seg(target): THIS
    # PROJECT'S EXTENSION, not in the paper. The filter is the image's weak labels: pseudo
    # (UDA) or a person's (WDA, weak_labels "image" or "point").
    self_training: bool = False

    iterations: int = 1000             # adaptation steps, each with a source and a target batch
    lr: float = 2.5e-4                 # segmentation network, fine-tuned from source-only
    # Loss weights (docs/method.md §7). lambda_c: 0.01 with pseudo-weak labels, 0.2 with
    # human ones.
    lambda_adv: float = 0.001          # output-space adversarial (AdaptSegNet)
    lambda_c: float = 0.01             # weak-label classification L_c, pseudo-weak labels
    lambda_c_human: float = 0.2        # ... with human image labels (WDA)
    lambda_cw: float = 0.001           # category-wise adversarial L_adv^C
    lambda_point: float = 1.0          # point supervision (WDA, points)
    lambda_st: float = 1.0             # target pseudo-label cross-entropy (self-training)
    pseudo_threshold: float = 0.2      # T for pseudo-weak labels
    # Where pseudo-weak labels come from: "online" (the paper: the current model's training
    # forward pass, at every step), "online_eval" (the current model at every step, in a
    # separate no-grad pass in eval mode: BatchNorm's running statistics, not the target
    # batch's) or "start" (the starting model's, in eval mode, computed once and frozen).
    pseudo_weak_from: str = "online"
    # BatchNorm statistics frozen during adaptation (running statistics in every forward
    # pass, affine weights still trained): a probe of the weak-label study, NOT the released
    # code, whose BatchNorm stays in training mode. False: each batch is normalised by its
    # own statistics, so target batches see target statistics.
    freeze_bn: bool = False
    smooth_max_r: float = 1.0          # r of the smooth-max pooling
    # The N of the pooling's log-mean-exp, i.e. its area prior; None = the logit map's own
    # h*w (the paper's formula). 8385 weighs one position as the paper's 129x65 map does: the
    # paper's prior at any resolution, chosen on target val by the weak-label study
    # (docs/method.md §13). A DEPARTURE from the formula at the embedded 8x16 map; the paper
    # presets keep None, which at their resolution is the same N.
    pool_positions: int | None = 8385
    # Pool the logits centred over classes at each position, A_c - mean_k A_k, instead of the
    # raw logits: softmax ignores a shift of every class's logit, and raw pooling lets L_c
    # move all classes that way at no cost to L_seg. THIS PROJECT'S DEPARTURE, not the paper.
    pool_centred: bool = False
    # λ_c·L_c on the source batch too, against its ground-truth image labels, so that P_c is
    # calibrated where labels exist. THIS PROJECT'S DEPARTURE, not in the paper.
    source_weak_loss: bool = False
    weak_dropout: float = 0.1          # dropout on target logits before L_c (released code)
    disc_lr: float = 1e-4              # discriminators: Adam, betas (0.9, 0.99)
    # ndf of the output-space discriminator: 64 in the paper, for a ResNet-101; 16 here matches
    # the slim network and makes it cost a third of the adaptation step instead of two thirds.
    output_disc_width: int = 16
    category_disc_hidden: int | None = None  # hidden width of D_c; None = feature dim D
    fda_beta: float = 0.05             # FDA window: 0.05 * 64 px = a 7x7 block of frequencies
    fda_prob: float = 0.5              # share of source images restyled ("beside the originals")
    # How those images are restyled: "fda", towards the target (the FDA stand-in, or the
    # translated images when given), or "colour", a CONTROL: a random colour jitter of each
    # image, scaled to change it as much as FDA would (mean absolute change), towards nothing.
    restyle: str = "fda"
    # A folder of source images translated offline (e.g. by CycleGAN), one PNG per source
    # image named like it; when set, pixel adaptation uses it instead of the FDA stand-in.
    translated_source_dir: str | None = None
    # Self-training's class-balanced selection: per class, the pixels predicted as it whose
    # confidence is at least the class's `st_quantile` quantile (0.5: its most confident half)
    # ... or at least st_cap, whichever threshold is lower. A cap below 1 lowers the threshold
    # of the classes predicted most confidently, the easy ones, so they keep more than the
    # share (docs/method.md §16); 1.0 keeps the same share of every class, as CBST does.
    # The defaults are the round chosen on target val over the candidates of docs/method.md
    # §16 (figures/mechanisms.md): no cap, labels with target statistics, augmented student.
    st_quantile: float = 0.5
    st_cap: float = 1.0
    # The BatchNorm statistics the pixel pseudo labels are made with: "running" (the model as
    # trained, in eval mode) or "target" (re-estimated on target train first, method.adabn).
    st_label_statistics: str = "target"
    # A random colour jitter (method.pixel_adaptation.JITTER) of every target image the
    # network trains on while it self-trains: photometric augmentation of the student's input.
    st_augment: bool = True


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)


def _one_of(*choices):
    return lambda v: v in choices, f"one of {', '.join(map(repr, choices))}"


SPLITS = ("source_train", "source_val", "target_train", "target_val", "target_test")
_POSITIVE = (lambda v: v > 0, "> 0")
_AT_LEAST_1 = (lambda v: v >= 1, ">= 1")
_NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
_SHARE = (lambda v: 0 <= v <= 1, "in [0, 1]")
_SIZE = (lambda v: len(v) == 2 and all(type(x) is int and x >= 1 for x in v),
         "(width, height), two whole numbers >= 1")

# The allowed range of every field whose type alone does not say it; None always passes
# where the annotation allows it. Checked by `validate` when a config is built (`preset`,
# `override`) and again before training.
RANGES = {
    "data.dataset": _one_of("embedded", "gta5", "synthia", "folders"),
    # The embedded generator draws scenes of at least 16 px a side; what the network and the
    # discriminators need at the configured sizes is checked before training (stages).
    "data.height": (lambda v: v >= 16, ">= 16"), "data.width": (lambda v: v >= 16, ">= 16"),
    "data.sizes": (lambda v: (not v or set(v) == set(SPLITS)) and all(
                       type(n) is int and n >= 1 for n in v.values()),
                   f"a number of images >= 1 for each of {', '.join(SPLITS)} (all five; {{}} "
                   f"for the real datasets, whose folders decide)"),
    "data.weak_label_fraction": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "data.val_count": _AT_LEAST_1,
    "data.class_protocol": _one_of(19, 16, 13),
    "data.source_size": _SIZE, "data.target_size": _SIZE,
    "model.backbone": _one_of("slim", "resnet50", "resnet101"),
    "model.base_width": _AT_LEAST_1,
    "model.aspp_rates": (lambda v: len(v) >= 1 and all(type(x) is int and x >= 1 for x in v),
                         "one or more whole numbers >= 1"),
    "train.iterations": _AT_LEAST_1, "train.poly_horizon": _AT_LEAST_1,
    "train.batch_size": _AT_LEAST_1, "train.optimizer": _one_of("sgd", "adam"),
    "train.lr": _POSITIVE, "train.momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "train.weight_decay": _NON_NEGATIVE, "train.head_lr_mult": _POSITIVE,
    "train.poly_power": _NON_NEGATIVE,
    "train.grad_clip": (lambda v: v > 0, "> 0 (None disables clipping)"),
    "train.eval_every": _AT_LEAST_1, "train.eval_batch_size": _AT_LEAST_1,
    "train.workers": _NON_NEGATIVE,
    "train.checkpoint_every": _AT_LEAST_1,
    "train.split": _one_of("source_train", "target_train"),
    "train.precision": _one_of("fp32", "bf16"),
    "adapt.weak_labels": _one_of(*WEAK_LABEL_SOURCES),
    "adapt.iterations": _AT_LEAST_1, "adapt.lr": _POSITIVE,
    "adapt.lambda_adv": _NON_NEGATIVE, "adapt.lambda_c": _NON_NEGATIVE,
    "adapt.lambda_c_human": _NON_NEGATIVE, "adapt.lambda_cw": _NON_NEGATIVE,
    "adapt.lambda_point": _NON_NEGATIVE, "adapt.lambda_st": _NON_NEGATIVE,
    "adapt.pseudo_threshold": (lambda v: 0 < v < 1, "in (0, 1)"),
    "adapt.pseudo_weak_from": _one_of("online", "online_eval", "start"),
    "adapt.smooth_max_r": _POSITIVE, "adapt.pool_positions": _AT_LEAST_1,
    "adapt.weak_dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "adapt.disc_lr": _POSITIVE, "adapt.output_disc_width": _AT_LEAST_1,
    "adapt.category_disc_hidden": _AT_LEAST_1,
    "adapt.fda_beta": (lambda v: 0 < v <= 0.5, "in (0, 0.5]"),
    "adapt.fda_prob": _SHARE, "adapt.st_quantile": _SHARE,
    "adapt.restyle": _one_of("fda", "colour"),
    "adapt.st_cap": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "adapt.st_label_statistics": _one_of("running", "target"),
}


def check_range(dotted: str, value):
    """`value` checked against the range RANGES gives field `dotted` ("adapt.fda_beta"): the
    one place each range is written, read by the config and by the functions that take the
    field's value, so both accept the same values. Returns `value`; raises ValueError naming
    the field, the value and what was expected. None passes (the annotations say where it
    is allowed)."""
    if value is None or dotted not in RANGES:
        return value
    ok, expected = RANGES[dotted]
    try:
        good = bool(ok(value))
    except TypeError:
        good = False
    if not good:
        raise ValueError(f"{dotted}={value!r}: expected {expected}")
    return value


def validate(cfg: Config) -> Config:
    """Check every field's type (its annotation) and range (RANGES); the first error names
    the field, the value and what was expected. Returns `cfg`. Raises ValueError."""
    for section in dataclasses.fields(cfg):
        obj = getattr(cfg, section.name)
        for f in dataclasses.fields(obj):
            dotted, value = f"{section.name}.{f.name}", getattr(obj, f.name)
            _typed(dotted, str(f.type), value)
            check_range(dotted, value)
    return cfg


def check_switches(cfg: Config) -> None:
    """Errors for values out of range (`validate`) and for switch combinations that cannot
    train, naming the fields."""
    validate(cfg)
    a = cfg.adapt
    if a.weak_labels == "none" and (a.weak_loss or a.category_alignment):
        raise ValueError("adapt.weak_loss and adapt.category_alignment need weak labels; "
                         "adapt.weak_labels is 'none'")
    if a.self_training and a.weak_labels not in ("pseudo", "image", "point"):
        raise ValueError(f"adapt.self_training filters pixel pseudo labels by the image's weak "
                         f"labels and needs adapt.weak_labels='pseudo' (UDA), 'image' or "
                         f"'point' (WDA), got {a.weak_labels!r}")
    if a.source_weak_loss and not a.weak_loss:
        raise ValueError("adapt.source_weak_loss adds L_c on the source and needs "
                         "adapt.weak_loss=True")
    idle = _idle_terms(a)
    if idle:
        raise ValueError(f"{idle[0]}: the term is switched on but would do nothing; switch it "
                         f"off instead (a stage that names it would claim a term it has not)")


def _idle_terms(a) -> list[str]:
    """The terms that are switched on with a weight (or a share of images) of 0: they would
    train exactly as if they were off. Each as 'switch=value and weight=0'."""
    human = a.weak_labels in ("image", "point")
    weights = [("output_alignment", "lambda_adv"), ("category_alignment", "lambda_cw"),
               ("pixel_adaptation", "fda_prob"),
               ("weak_loss", "lambda_c_human" if human else "lambda_c")]
    if not a.st_augment:  # with it, a round at λ_st = 0 still augments: self-training's control
        weights.append(("self_training", "lambda_st"))
    idle = [f"adapt.{switch}=True and adapt.{weight}=0" for switch, weight in weights
            if getattr(a, switch) and getattr(a, weight) == 0]
    if a.weak_labels == "point" and a.lambda_point == 0:
        idle.append("adapt.weak_labels='point' and adapt.lambda_point=0")
    return idle


# The paper's UDA recipe (docs/method.md §3-4, §7) in the fields that the weak-label study
# (docs/method.md §13) probes or chooses: pseudo-weak labels from the training forward pass at
# every step, T = 0.2, raw logits pooled over the map's own positions, L_c on the target
# only, λ_cw = 0.001; BatchNorm as the embedded presets train it. The study starts from it,
# and the stage "uda_paper_labels" trains it, so that its result stays shown.
PAPER_UDA = {"adapt.pseudo_weak_from": "online", "adapt.pseudo_threshold": 0.2,
             "adapt.pool_positions": None, "adapt.pool_centred": False,
             "adapt.source_weak_loss": False, "adapt.freeze_bn": False,
             "adapt.lambda_cw": 0.001}

PRESETS = ("smoke", "default", "full", "paper_gta5", "paper_synthia")


def _paper(source: str, class_protocol: int, source_size) -> Config:
    """docs/method.md §8, field by field: batch 1, SGD 2.5e-4 with the head at 10x, poly 0.9 over
    250k steps stopped at 120k, discriminators on Adam 1e-4, λ as in §5, T = 0.2; BatchNorm
    as the released code has it: training mode, affine weights frozen."""
    return Config(
        data=DataConfig(dataset=source, class_protocol=class_protocol, source_size=source_size,
                        target_size=(1024, 512), sizes={}),
        model=ModelConfig(backbone="resnet101", aspp_rates=(6, 12, 18, 24),
                          freeze_bn_affine=True),
        train=TrainConfig(iterations=120_000, poly_horizon=250_000, batch_size=1,
                          optimizer="sgd", lr=2.5e-4, momentum=0.9, weight_decay=5e-4,
                          head_lr_mult=10.0, grad_clip=None, eval_every=5000,
                          eval_batch_size=1, checkpoint_every=5000),
        adapt=AdaptConfig(iterations=120_000, lr=2.5e-4, lambda_adv=0.001, lambda_c=0.01,
                          lambda_c_human=0.2, lambda_cw=0.001, lambda_point=1.0,
                          pseudo_threshold=0.2, smooth_max_r=1.0, pool_positions=None,
                          weak_dropout=0.1,
                          disc_lr=1e-4, output_disc_width=64, category_disc_hidden=None),
    )


def preset(name: str) -> Config:
    """The named preset's config (a fresh object each call), validated."""
    return validate(_preset(name))


def _preset(name: str) -> Config:
    if name == "default":
        return Config()
    if name == "smoke":
        return Config(
            data=DataConfig(sizes={"source_train": 64, "source_val": 32, "target_train": 64,
                                   "target_val": 32, "target_test": 32}),
            model=ModelConfig(base_width=8),
            train=TrainConfig(iterations=30, batch_size=8, eval_every=15),
            adapt=AdaptConfig(iterations=10),
        )
    if name == "full":
        return Config(
            data=DataConfig(sizes={"source_train": 6000, "source_val": 500, "target_train": 6000,
                                   "target_val": 500, "target_test": 1000}),
            model=ModelConfig(base_width=32),
            train=TrainConfig(iterations=6000, eval_every=1000),
            adapt=AdaptConfig(iterations=4000),
        )
    if name == "paper_gta5":
        return _paper("gta5", 19, (1280, 720))
    if name == "paper_synthia":
        return _paper("synthia", 16, (1280, 760))
    raise ValueError(f"unknown preset {name!r}; expected one of {PRESETS}")


# What a run's key leaves out of its config: fields that do not change the result.
NOT_KEYED = ("train.checkpoint_every", "train.tensorboard", "train.workers")
# The fields that run keys held when this rule was written (2026-12): keyed at any value, so
# that every run trained before keeps its key. Every other field, in any section (a section
# added later included), is keyed only while it differs from its default: adding a field
# with a default changes no existing run's key. Never add a name here.
KEYED_ALWAYS = {
    "data": ("dataset height width sizes seed weak_label_fraction source_root target_root "
             "val_count class_protocol source_size target_size").split(),
    "model": "backbone base_width aspp_rates legacy_aspp freeze_bn backbone_weights".split(),
    "train": ("iterations poly_horizon batch_size optimizer lr momentum weight_decay "
              "head_lr_mult poly_power grad_clip eval_every eval_batch_size split").split(),
    "adapt": ("weak_labels output_alignment weak_loss category_alignment pixel_adaptation "
              "self_training iterations lr lambda_adv lambda_c lambda_c_human lambda_cw "
              "lambda_point lambda_st pseudo_threshold pseudo_weak_from freeze_bn smooth_max_r "
              "pool_positions pool_centred source_weak_loss weak_dropout disc_lr "
              "output_disc_width category_disc_hidden fda_beta fda_prob translated_source_dir "
              "st_quantile st_cap").split(),
}


def key_config(cfg) -> dict:
    """to_dict(cfg) as the keys of runs and pseudo labels see it: without NOT_KEYED
    (train.checkpoint_every: a resumed run ends as an uninterrupted one), and without every
    field outside KEYED_ALWAYS while it is at its default, so that a field added later, in
    any section, leaves the keys of runs trained before it unchanged. A section left empty
    is left out."""
    config = to_dict(cfg)
    for dotted in NOT_KEYED:
        section, name = dotted.split(".")
        del config[section][name]
    for section in dataclasses.fields(cfg):
        always = KEYED_ALWAYS.get(section.name, ())
        for f in dataclasses.fields(getattr(cfg, section.name)):
            if f.name not in always and f.name in config[section.name] and (
                    config[section.name][f.name] == _default(f)):
                del config[section.name][f.name]
        if not config[section.name] and section.name not in KEYED_ALWAYS:
            del config[section.name]
    return config


def _default(f: dataclasses.Field):
    """A dataclass field's default, in to_dict's form."""
    value = f.default_factory() if f.default is dataclasses.MISSING else f.default
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def to_dict(cfg) -> dict:
    """The config as nested plain dicts (tuples stay tuples; `runs` stores it as JSON, where
    they become lists, and compares the stored form)."""
    return dataclasses.asdict(cfg)


def _typed(dotted: str, annotation: str, value):
    """`value` checked against the field's annotation (a string such as "float | None");
    a whole number given for a float field becomes a float, a list for a tuple a tuple."""
    kinds = [k.strip() for k in annotation.split("|")]
    if value is None and "None" in kinds:
        return value
    if "bool" in kinds and isinstance(value, bool):
        return value
    if "int" in kinds and type(value) is int:
        return value
    if "float" in kinds and type(value) in (int, float):
        return float(value)
    if "str" in kinds and isinstance(value, str):
        return value
    if "tuple" in kinds and isinstance(value, tuple | list):
        return tuple(value)
    if "dict" in kinds and isinstance(value, dict):
        return value
    spelled = " (True or False)" if "bool" in kinds else ""
    raise ValueError(f"{dotted}={value!r}: expected {annotation}{spelled}")


def fields(cfg) -> list[str]:
    """Every field of a config as a dotted name ("train.iterations", ...)."""
    return [f"{section.name}.{f.name}" for section in dataclasses.fields(cfg)
            for f in dataclasses.fields(getattr(cfg, section.name))]


def override(cfg, **changes):
    """A copy of `cfg` with dotted fields changed: override(cfg, **{"train.iterations": 10}).
    Unknown fields raise an error that names them; a value of the wrong type (the string
    'false' for a switch, 'abc' for a number) or out of range (`validate`) raises one that
    names the field and what was expected."""
    cfg = copy.deepcopy(cfg)
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        obj = cfg
        for part in path:
            if not dataclasses.is_dataclass(obj) or not hasattr(obj, part):
                raise KeyError(f"config has no section {part!r} (in {dotted!r})")
            obj = getattr(obj, part)
        if not dataclasses.is_dataclass(obj) or last not in {f.name for f in
                                                              dataclasses.fields(obj)}:
            close = difflib.get_close_matches(dotted, fields(cfg), n=3)
            raise KeyError(f"config has no field {dotted!r}"
                           + (f"; did you mean {' or '.join(close)}?" if close else ""))
        annotation = next(f.type for f in dataclasses.fields(obj) if f.name == last)
        setattr(obj, last, _typed(dotted, str(annotation), value))
    return validate(cfg)
