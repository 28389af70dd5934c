"""The series' stages, one record each (`Stage`), and every table derived from the records.

A stage is what it trains (the stage it starts from, its switches by name, other config
fields it sets) and what the tables need to know about it: its title, the paper's number,
what a person annotates for it, which step of the results' ladder it is (`Comparison`) and
which controls of `make ablation` test it (`Control`). Adding a stage is adding one record
to STAGES; the results table, the ladder of verdicts, the annotation-cost figure, the
controls and the schedule trade of `make bench` read it from there.

* source_only: trained on labelled source images only. Target images never pass through the
  network in training mode, so BatchNorm statistics are the source's alone.
* oracle: the same network trained on the target's training labels: the ceiling, unavailable
  in practice (it uses the very labels that domain adaptation does without).
* the adaptation stages start from the cached source-only weights, as in the paper; the
  self-training round (this project's extension) starts from the full UDA recipe.
* adabn trains nothing: the source-only weights with BatchNorm's running statistics
  re-estimated on target train (method.adabn), the side effect every adaptation step has;
  no_target_term and the other "control:" stages each differ from a step only in what the
  step's claim is about (docs/method.md §15-§16).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from wsda_lib.core.config import PAPER_UDA, Config, check_switches, override
from wsda_lib.method.objective import LossWeights

EVAL_SPLITS = ("source_val", "target_val", "target_test")
PAPER_POOLING = {"adapt.pool_positions": None}
# The self-training round chosen on target val (mechanisms.ST_CANDIDATES, figures/mechanisms.md):
# class-balanced, labels with target statistics, augmented student; config.AdaptConfig's
# defaults. Spelled out, so that the controls stay this round whatever the defaults.
CHOSEN_SELF_TRAINING = {"adapt.st_cap": 1.0, "adapt.st_label_statistics": "target",
                        "adapt.st_augment": True}


@dataclass(frozen=True)
class Switches:
    """AdaptConfig's switches, by name: where the target's weak labels come from ("none",
    "pseudo", "image", "point", "present") and which terms of the objective are on. Output-space
    alignment, on in every preset, is left to the config, so that `--set
    adapt.output_alignment=False` ablates it in every adaptation stage at once."""
    weak_labels: str = "none"
    weak_loss: bool = False           # L_c (paper eq. 3)
    category_alignment: bool = False  # L_adv^C (eq. 6-7)
    pixel_adaptation: bool = False    # FDA stand-in (§3.4)
    self_training: bool = False       # this project's extension (docs/method.md §16)

    def overrides(self) -> dict:
        return {f"adapt.{f.name}": getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class Comparison:
    """A step of the results' ladder: this stage judged against `baseline` (notebook 06,
    results.json's verdicts), described as `what`. Each UDA step is judged against the row
    before it, which differs from it in its own term only, and output-space alignment, the
    first step, against AdaBN: the side effect every adaptation stage shares (target batches
    through BatchNorm) without any term. Controls that need training of their own are
    `Control`s (`make ablation`), attached to results.json under "controls". as_trained_only:
    judged only as trained, not with target BatchNorm statistics (records.results.EVALUATIONS):
    AdaBN is source-only scored with target statistics, so scored so the two are the same
    weights."""
    baseline: str
    what: str
    as_trained_only: bool = False


@dataclass(frozen=True)
class Control:
    """A control of `make ablation`: this stage judged against `stage`, which differs from
    it only in what the claim `what` is about."""
    stage: str
    what: str


@dataclass(frozen=True)
class Stage:
    """One stage of the series. `title` is filled from the stage's resolved config
    (`title(name, cfg)`): {pooling} is the weak labels' pooling ("N = 8385", "N = h·w"),
    and {adapt.X} / {train.X} a config field, so a title stays true under `--set`."""
    title: str
    start_from: str | None = None      # whose weights it starts from; None: trained from scratch
    switches: Switches | None = None   # None: a supervised stage, or one that trains nothing
    settings: dict = field(default_factory=dict)  # other dotted config fields it sets
    # True: trains nothing; the starting weights with BatchNorm's running statistics
    # re-estimated on target train (method.adabn), the baseline every UDA step must beat.
    statistics_only: bool = False
    # True: a control that runs the adaptation loop with every target term off, so target
    # batches pass through BatchNorm in training mode and nothing else reads them. Any other
    # adaptation stage with no target term is refused (`stage_config`).
    no_target_term: bool = False
    # What the tables need.
    short_title: str | None = None     # the row label where space is short
    result_row: bool = False           # a row of the results table (notebook 06, README)
    paper_miou: float | None = None    # the paper's GTA5 -> Cityscapes mIoU (docs/method.md §9)
    annotation: tuple[str, int] | None = None  # what a person gives per image, seconds
    comparison: Comparison | None = None
    controls: tuple[Control, ...] = ()
    trade: bool = False                # timed by `make bench`'s schedule trade

    @property
    def overrides(self) -> dict:
        """Every config field the stage sets: its switches, then its settings."""
        return {**(self.switches.overrides() if self.switches else {}), **self.settings}


UDA_L_C = Switches("pseudo", weak_loss=True)
UDA_CATEGORY = Switches("pseudo", weak_loss=True, category_alignment=True)
UDA_FULL = Switches("pseudo", weak_loss=True, category_alignment=True, pixel_adaptation=True)
WDA_FULL = Switches("image", weak_loss=True, category_alignment=True, pixel_adaptation=True)
NOT_IN_PAPER = None  # a result row without a paper number: this project's

STAGES = {
    "source_only": Stage("source-only", short_title="source-only", result_row=True,
                         paper_miou=36.6, trade=True),
    "adabn": Stage("source-only + target BatchNorm statistics (AdaBN)", "source_only",
                   statistics_only=True, short_title="AdaBN", result_row=True,
                   paper_miou=NOT_IN_PAPER,
                   comparison=Comparison("source_only", "Target BatchNorm statistics alone "
                                         "(AdaBN, nothing trained)", as_trained_only=True)),
    "adaptsegnet": Stage("output-space adversarial (AdaptSegNet)", "source_only", Switches(),
                         short_title="AdaptSegNet", result_row=True, paper_miou=42.4,
                         comparison=Comparison("adabn", "Output-space alignment, against "
                                               "AdaBN"),
                         controls=(Control("no_target_term", "Output-space alignment, against "
                                           "the same loop with no target term"),),
                         trade=True),
    "uda_weak": Stage("UDA: pseudo-weak labels + L_c ({pooling})", "source_only", UDA_L_C,
                      short_title="UDA: L_c", result_row=True, paper_miou=44.2,
                      comparison=Comparison("adaptsegnet", "L_c with pseudo-weak labels"),
                      controls=(Control("uda_paper_labels", "The default's pseudo-weak labels, "
                                        "against the paper's"),
                                Control("uda_weak_all_present", "Pseudo-weak labels, against "
                                        "every class labelled present")),
                      trade=True),
    # The paper's pseudo-weak labels, kept to show what the default's departures change.
    "uda_paper_labels": Stage("UDA: pseudo-weak labels + L_c, the paper's pooling ({pooling})",
                              "source_only", UDA_L_C, PAPER_UDA,
                              short_title="UDA: L_c, paper's pooling"),
    "uda_category": Stage("UDA: + category-wise alignment", "source_only", UDA_CATEGORY,
                          short_title="UDA: + category", result_row=True, paper_miou=45.5,
                          comparison=Comparison("uda_weak", "Category-wise alignment")),
    "uda_pixel": Stage("UDA: + pixel adaptation (FDA stand-in), full recipe", "source_only",
                       UDA_FULL, short_title="UDA: full recipe", result_row=True,
                       paper_miou=48.2, annotation=("UDA: nothing", 0),
                       comparison=Comparison("uda_category", "Pixel adaptation (FDA "
                                             "stand-in)"),
                       controls=(Control("uda_colour", "FDA restyling, against random colour "
                                         "augmentation of the same strength"),),
                       trade=True),
    "uda_self_training": Stage(
        "UDA: + self-training, class-balanced, colour-augmented (this project's extension)",
        "uda_pixel", dataclasses.replace(UDA_FULL, self_training=True),
        short_title="UDA: full + self-train.", result_row=True, paper_miou=NOT_IN_PAPER,
        comparison=Comparison("uda_pixel", "Self-training round (extension: its pseudo "
                              "labels, extra steps and augmentation together)"),
        controls=(Control("uda_self_training_no_labels", "Self-training, against the same "
                          "round without its pseudo labels (λ_st = 0)"),)),
    # Human weak labels keep the paper's pooling (N = the map's own size): the area prior of
    # the UDA rows was chosen for pseudo-weak labels, whose negatives are unreliable
    # (docs/method.md §13), and was not measured with human labels.
    "wda_weak": Stage("WDA: image labels + L_c", "source_only",
                      Switches("image", weak_loss=True), PAPER_POOLING,
                      short_title="WDA: image labels + L_c"),
    # The WDA rows use the whole recipe, like the UDA row they are compared with (uda_pixel).
    "wda_image": Stage("WDA: image labels, full recipe", "source_only", WDA_FULL, PAPER_POOLING,
                       short_title="WDA: image labels, full", result_row=True,
                       paper_miou=53.0, annotation=("WDA: image labels", 30),
                       comparison=Comparison("uda_pixel", "WDA image labels, against the best "
                                             "UDA recipe"),
                       trade=True),
    "wda_point": Stage("WDA: one point per class, full recipe", "source_only",
                       dataclasses.replace(WDA_FULL, weak_labels="point"), PAPER_POOLING,
                       short_title="WDA: points, full", result_row=True, paper_miou=56.4,
                       annotation=("WDA: one point per class", 45),
                       comparison=Comparison("wda_image", "One point per class, against image "
                                             "labels")),
    # The weak-label filter where it can act: a person's image labels filter the pixel
    # pseudo labels (UDA's pseudo-weak labels say "present" for nearly every class).
    "wda_self_training": Stage("WDA: image labels, full recipe + self-training (this "
                               "project's extension)", "wda_image",
                               dataclasses.replace(WDA_FULL, self_training=True),
                               PAPER_POOLING),
    "oracle": Stage("oracle (target labels)", settings={"train.split": "target_train"},
                    short_title="oracle", result_row=True, paper_miou=64.0,
                    annotation=("full pixel labels", 90 * 60), trade=True),
    # Controls (`make ablation`, experiments/ablation.py): each rules out the obvious other
    # explanation of one step's effect; the step names it in its `controls`.
    "no_target_term": Stage("control: the adaptation loop with no target term (target "
                            "batches through BatchNorm only)", "source_only", Switches(),
                            {"adapt.output_alignment": False}, no_target_term=True),
    "uda_pixel_continued": Stage("control: UDA + pixel, {adapt.iterations} more steps without "
                                 "self-training", "uda_pixel", UDA_FULL),
    # The round chosen on target val (docs/method.md §16) with its pseudo labels weighted 0:
    # its steps and its student's augmentation alone.
    "uda_self_training_no_labels": Stage("control: the chosen self-training round with its "
                                         "pseudo labels weighted 0 (λ_st = 0)", "uda_pixel",
                                         dataclasses.replace(UDA_FULL, self_training=True),
                                         {**CHOSEN_SELF_TRAINING, "adapt.lambda_st": 0.0}),
    "uda_weak_all_present": Stage("control: L_c with every class labelled present",
                                  "source_only", Switches("present", weak_loss=True)),
    "wda_category": Stage("WDA: image labels + L_c + category-wise alignment", "source_only",
                          Switches("image", weak_loss=True, category_alignment=True),
                          PAPER_POOLING,
                          controls=(Control("wda_weak", "Category-wise alignment, with WDA "
                                            "image labels"),)),
    "uda_colour": Stage("control: UDA + random colour augmentation of FDA's strength",
                        "source_only", UDA_FULL, {"adapt.restyle": "colour"}),
}


def stage(name: str) -> Stage:
    """The stage called `name`; an unknown name is an error listing the stages."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; expected one of {sorted(STAGES)}")
    return STAGES[name]


def stage_config(name: str, cfg: Config) -> Config:
    """The config stage `name` trains with: `cfg` with the stage's overrides, checked.
    Raises ValueError for an adaptation stage with no term that reads the target."""
    st = stage(name)
    resolved = override(cfg, **st.overrides)
    check_switches(resolved)
    if st.start_from and not (st.no_target_term or st.statistics_only) and \
            not LossWeights.from_config(resolved.adapt).target_terms():
        raise ValueError(f"stage {name!r} would adapt with no target term: every term that "
                         f"reads the target is switched off or has weight 0 "
                         f"(method.objective.LossWeights)")
    return resolved


def resolved_chain(name: str, cfg: Config) -> dict[str, Config]:
    """{stage: its resolved config} for stage `name` and the stages it starts from, first to
    train first: each resolved once, for the checks that read them all."""
    return {each: stage_config(each, cfg) for each in chain(name)}


def title(name: str, cfg: Config) -> str:
    """Stage `name`'s title under the base config `cfg`, filled from its resolved config."""
    resolved = override(cfg, **stage(name).overrides)  # values only: no stage is refused here
    n = resolved.adapt.pool_positions
    pooling = f"N = {n}" if n is not None else "N = h·w"
    return stage(name).title.format(pooling=pooling, adapt=resolved.adapt, train=resolved.train)


def fixed_fields(name: str) -> set[str]:
    """The config fields that stage `name`, or a stage it starts from, sets itself: a user's
    override of one of them would be silently replaced, so the CLI refuses it."""
    return {f for each in chain(name) for f in stage(each).overrides}


def chain(name: str) -> list[str]:
    """Stage `name` and the stages it starts from, first to train first."""
    names = []
    while name:
        names.insert(0, name)
        name = stage(name).start_from
    return names


# The tables, derived from the records (in the order of STAGES).
def result_stages() -> tuple[str, ...]:
    """The rows of the results table, in order."""
    return tuple(n for n, s in STAGES.items() if s.result_row)


def paper_miou() -> dict[str, float | None]:
    """{result row: the paper's GTA5 -> Cityscapes mIoU, None where the paper has none}."""
    return {n: STAGES[n].paper_miou for n in result_stages()}


def short_titles() -> dict[str, str]:
    return {n: s.short_title for n, s in STAGES.items() if s.short_title}


def annotation() -> dict[str, tuple[str, int]]:
    """{stage: (what a person provides per target image, about how many seconds)}, the
    paper's Figure 1."""
    return {n: s.annotation for n, s in STAGES.items() if s.annotation}


def comparisons() -> tuple[tuple[str, str, str], ...]:
    """The ladder of verdicts: (what, stage, baseline) per stage with a Comparison."""
    return tuple((s.comparison.what, n, s.comparison.baseline) for n, s in STAGES.items()
                 if s.comparison)


def controls() -> tuple[tuple[str, str, str], ...]:
    """The controls `make ablation` trains: (what, stage, control) per Control."""
    return tuple((c.what, n, c.stage) for n, s in STAGES.items() for c in s.controls)


def pseudo_weak_rows() -> tuple[str, ...]:
    """The result rows that train on pseudo-weak labels: their precision and recall at the
    start and end of training belong in results.json."""
    return tuple(n for n in result_stages()
                 if STAGES[n].switches and STAGES[n].switches.weak_labels == "pseudo")


def trade_stages() -> tuple[str, ...]:
    """The stages `make bench` times for its schedule trade."""
    return tuple(n for n, s in STAGES.items() if s.trade)
