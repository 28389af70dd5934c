"""Tables of stage results: mIoU, the share of the source -> oracle gap a stage closes, and a
verdict on whether a stage helped: a paired t-test over seeds on target test (`paired_test`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, stats

from wsda_lib.core.atomic import atomic_write, write_json
from wsda_lib.stages import registry


def gap_closed(miou: float, source_only: float, oracle: float) -> float:
    """Fraction of the source-only -> oracle gap closed: (mIoU - source) / (oracle - source).

    >>> gap_closed(45.5, 36.6, 64.0)   # the paper's UDA with category-wise alignment
    0.3248...
    """
    if oracle == source_only:
        return float("nan")
    return (miou - source_only) / (oracle - source_only)


def stage_table(results: dict, titles: dict, split: str = "target_test"):
    """A DataFrame of mIoU on `split` and gap closed, one row per stage; results maps stage
    name -> its metrics dict (or a stage result with a .metrics dict) and must contain
    "source_only" and "oracle"."""
    results = {name: getattr(m, "metrics", m) for name, m in results.items()}
    src, orc = results["source_only"][split]["miou"], results["oracle"][split]["miou"]
    rows = [{"stage": titles.get(name, name), f"mIoU {split} (%)": m[split]["miou"],
             "gap closed (%)": 100 * gap_closed(m[split]["miou"], src, orc)}
            for name, m in results.items()]
    return pd.DataFrame(rows).set_index("stage").round(1)


# The one verdict rule: a paired, two-sided t-test over the seeds on target test
# (scipy.stats.ttest_rel) at this confidence level. Target val is for choosing and for
# learning curves only.
LEVEL = 0.95
TEST = "paired t-test over seeds (scipy.stats.ttest_rel), two-sided"
# The smallest gain a verdict should detect: the paper's smallest step (L_c with category-wise
# alignment, 44.2 -> 45.5 mIoU), and the power it should have (`seeds_needed`).
PAPER_SIZED_GAIN = 1.3
POWER = 0.8
# Every verdict `paired_test` can give, in the order tables list them.
KINDS = ("helps", "no clear difference", "hurts", "one seed: no test")


def paired_test(stage, baseline, level: float = LEVEL) -> dict:
    """The verdict rule. stage, baseline: one mIoU (%) per seed, paired by seed. Returns the
    test's name, the number of seeds n, the mean paired gain, its `level` confidence interval
    (ci_low, ci_high), the two-sided p and the verdict that follows from the interval:
    "helps" (interval above 0), "hurts" (below 0) or "no clear difference" (it holds 0).
    One seed has no spread, so no test: the verdict is "one seed: no test". Seeds whose
    gains are all equal have no spread either: the interval is that gain. Raises ValueError
    unless both have one value per seed.

    >>> t = paired_test([31.0, 32.0, 33.0], [30.0, 30.5, 31.0])   # gains 1, 1.5, 2
    >>> t["verdict"], round(t["gain"], 2), round(t["ci_low"], 2), round(t["ci_high"], 2)
    ('helps', 1.5, 0.26, 2.74)
    >>> round(t["p"], 4)
    0.0351
    """
    a = np.atleast_1d(np.asarray(stage, float))
    b = np.atleast_1d(np.asarray(baseline, float))
    if a.shape != b.shape:
        raise ValueError(f"{len(a)} stage value(s) but {len(b)} baseline value(s); expected "
                         f"one per seed for both")
    d = a - b
    n, gain = len(d), float(d.mean())
    out = {"test": TEST, "level": level, "n": n, "gain": gain}
    if n < 2:
        return {**out, "ci_low": None, "ci_high": None, "p": None,
                "verdict": "one seed: no test"}
    if np.all(d == d[0]):
        low = high = gain
        p = 1.0 if gain == 0 else 0.0
    else:
        result = stats.ttest_rel(a, b)
        ci = result.confidence_interval(level)
        low, high, p = float(ci.low), float(ci.high), float(result.pvalue)
    kind = "helps" if low > 0 else "hurts" if high < 0 else "no clear difference"
    return {**out, "ci_low": low, "ci_high": high, "p": p, "verdict": kind}


def judge(stage, baseline, level: float = LEVEL) -> tuple[str, str]:
    """The verdict of `paired_test` and the numbers behind it, as one string.

    >>> judge([31.0, 32.0, 33.0], [30.0, 30.5, 31.0])
    ('helps', '+1.50, 95% CI [+0.26, +2.74], p = 0.035, paired t-test over 3 seeds')
    >>> judge(30.2, 30.0)
    ('one seed: no test', '+0.20 on one seed')
    """
    t = paired_test(stage, baseline, level)
    if t["n"] < 2:
        return t["verdict"], f"{t['gain']:+.2f} on one seed"
    return t["verdict"], (f"{t['gain']:+.2f}, {100 * level:.0f}% CI [{t['ci_low']:+.2f}, "
                          f"{t['ci_high']:+.2f}], p = {t['p']:.3f}, paired t-test over "
                          f"{t['n']} seeds")


def verdict(what: str, stage, baseline: str, baseline_miou, *, split: str,
            level: float = LEVEL) -> str:
    """One plain sentence: did `what` help over `baseline`, by the rule (`paired_test`) on
    `split`'s per-seed mIoU (named by the caller: "target test" for verdicts)? A single
    seed gets a comparison, never a verdict.

    >>> print(verdict("X", [31.0, 32.0, 33.0], "Y", [30.0, 30.5, 31.0],
    ...               split="target test"))  # doctest: +ELLIPSIS
    X: helps — 32.0 mIoU against 30.5 for Y, on target test (+1.50, 95% CI [+0.26, +2.74], ...
    >>> verdict("X", 30.2, "Y", 30.0, split="target val").split(" for Y, ")[1]
    'on target val (+0.20 on one seed; no verdict from one seed).'
    """
    kind, detail = judge(stage, baseline_miou, level)
    head = (f"{np.mean(stage):.1f} mIoU against {np.mean(baseline_miou):.1f} for {baseline}, "
            f"on {split}")
    if kind == "one seed: no test":
        return f"{what}: {head} ({detail}; no verdict from one seed)."
    return f"{what}: {kind} — {head} ({detail})."


def seeds_needed(sd_difference: float, gain: float = PAPER_SIZED_GAIN, level: float = LEVEL,
                 power: float = POWER, most: int = 50) -> int | None:
    """The fewest seeds with which the rule's paired t-test detects a true mean gain `gain`
    (mIoU) with probability `power`, when per-seed gains spread with standard deviation
    `sd_difference`: the power of the two-sided test from the noncentral t distribution
    (scipy.stats.nct). None if more than `most` would be needed.

    >>> seeds_needed(1.0), seeds_needed(0.5), seeds_needed(2.0)
    (7, 4, 21)
    """
    for n in range(2, most + 1):
        if paired_power(n, sd_difference, gain, level) >= power:
            return n
    return None


def paired_power(n: int, sd_difference: float, gain: float = PAPER_SIZED_GAIN,
               level: float = LEVEL) -> float:
    """Probability that the rule's two-sided paired t-test over `n` seeds finds a true mean
    gain `gain` (mIoU) when per-seed gains have standard deviation `sd_difference`."""
    df, t_crit = n - 1, stats.t.ppf(1 - (1 - level) / 2, n - 1)
    shift = gain / (sd_difference / np.sqrt(n))
    power = stats.nct.sf(t_crit, df, shift) + stats.nct.cdf(-t_crit, df, shift)
    return float(np.nan_to_num(power, nan=1.0))  # nct gives NaN far out in the tail


def detectable_gain(n: int, sd_difference: float, level: float = LEVEL,
                    power: float = POWER) -> float:
    """The smallest true mean gain (mIoU) that the rule's paired t-test over `n` seeds finds
    with probability `power`, when per-seed gains have standard deviation `sd_difference`.

    >>> round(detectable_gain(7, 1.0), 2)
    1.27
    """
    if not sd_difference > 0 or n < 2:
        raise ValueError(f"detectable_gain needs n >= 2 seeds and a spread > 0, got n={n}, "
                         f"sd_difference={sd_difference}")
    # power depends on gain / sd only: bracket the root relative to sd (an sd of 1e-13, a
    # rounding residue of equal gains, is a spread too)
    return float(optimize.brentq(lambda g: paired_power(n, sd_difference, g, level) - power,
                                 1e-6 * sd_difference, 100 * sd_difference))


def paired_gain_sds(results: dict) -> dict[str, float]:
    """Per step of the ladder ({what: sd}; stages.registry.comparisons), the standard deviation
    (ddof=1, mIoU) over seeds of its paired per-seed gains on target test; what `power_note` and
    `power_markdown` size the test by. Needs two or more seeds (ValueError otherwise).

    >>> r = {"seeds": [0, 1], "stages": [{"stage": s, "miou_per_seed": [0.0, 0.0]}
    ...      for _, a, b in registry.comparisons() for s in (a, b)]}
    >>> set(paired_gain_sds(r).values())
    {0.0}
    """
    if len(results["seeds"]) < 2:
        raise ValueError(f"paired_gain_sds needs two or more seeds, results.json has "
                         f"{results['seeds']}")
    return {what: float(np.std(np.subtract(stage_mious(results, a), stage_mious(results, b)),
                               ddof=1)) for what, a, b in registry.comparisons()}


def power_note(results: dict) -> str:
    """What the seeds of results.json can detect: the median standard deviation of the paired
    per-seed gains over the ladder's steps, the gain detected with POWER at this many seeds, and the
    seeds a PAPER_SIZED_GAIN needs (`seeds_needed`). One sentence, as the README states it."""
    n = len(results["seeds"])
    if n < 2:
        return ("Power: one seed has no spread to measure, so no step gets a verdict; run two "
                "or more seeds.")
    sds = list(paired_gain_sds(results).values())
    sd = float(np.median(sds))
    if not sd > 0:
        return (f"Power: the paired gains of the {len(sds)} steps did not vary over the {n} "
                f"seeds (median standard deviation 0), so there is no spread to size a test by.")
    need = seeds_needed(sd)
    return (f"Power: the paired gains of the {len(sds)} steps spread with a median standard "
            f"deviation of {sd:.2f} mIoU over seeds, so {n} seeds detect a true gain of "
            f"{detectable_gain(n, sd):.1f} mIoU with {100 * POWER:.0f}% power, and a "
            f"paper-sized gain ({PAPER_SIZED_GAIN} mIoU, the paper's smallest step) needs "
            f"{need if need else 'more than 50'} seeds (`wsda_lib.records.results.seeds_needed`).")


def power_markdown(results: dict) -> list[str]:
    """Per step of the ladder, what its seeds can detect: the standard deviation of its paired
    per-seed gains (target test) and the smallest true gain the rule's test finds with POWER
    at this many seeds (`detectable_gain`); "—" where the gains did not vary or one seed has
    no spread. The lines of one Markdown table, with its caption."""
    n = len(results["seeds"])
    lines = [f"Power per step: the standard deviation of its paired per-seed gains, and the "
             f"smallest true gain the test detects with {100 * POWER:.0f}% power over {n} "
             f"seed(s) (`wsda_lib.records.results.detectable_gain`).", "",
             "| step | sd of the paired gains | detectable gain |", "|---|---|---|"]
    sds = paired_gain_sds(results) if n > 1 else {}
    for what, _, _ in registry.comparisons():
        sd = sds.get(what)
        found = f"{detectable_gain(n, sd):.1f}" if sd else "—"
        lines.append(f"| {what} | {_fmt(sd, '.2f')} | {found} |")
    return lines


def stage_mious(results: dict, name: str, key: str = "miou_per_seed") -> list:
    """One stage's per-seed mIoU from results.json (target test by default; the key
    "target_val_miou_per_seed" gives target val)."""
    stage = next(s for s in results["stages"] if s["stage"] == name)
    if key not in stage:
        raise ValueError(f"results.json has no {key!r} for stage {name!r}: it was written by an "
                         f"older version; run notebook 06 (make reproduce) again")
    return stage[key]


# How a stage is scored: "as_trained" (BatchNorm's running statistics, as every stage ends
# training) or "target_statistics" (re-estimated on target train first, method.adabn): the
# second takes BatchNorm statistics out of every comparison. The per-seed keys of each.
EVALUATIONS = {"as_trained": ("miou_per_seed", "target_val_miou_per_seed"),
               "target_statistics": ("miou_per_seed_target_statistics",
                                     "target_val_miou_per_seed_target_statistics")}


def comparisons(evaluation: str = "as_trained") -> tuple:
    """The ladder's steps (stages.registry.comparisons) judged under `evaluation`
    (EVALUATIONS): all of them as trained; with target statistics, all but those whose
    Comparison is as_trained_only (AdaBN against source-only)."""
    if evaluation not in EVALUATIONS:
        raise ValueError(f"evaluation must be one of {list(EVALUATIONS)}, got {evaluation!r}")
    return tuple(c for c in registry.comparisons() if evaluation == "as_trained" or
                 not registry.STAGES[c[1]].comparison.as_trained_only)


def tally(results: dict, evaluation: str = "as_trained") -> dict[str, int]:
    """How many of the comparisons judged under `evaluation` (`comparisons`) get each verdict
    of KINDS in results.json, on target test. A single-seed run counts every comparison
    under "one seed: no test", so the counts always sum to len(comparisons(evaluation))."""
    key = EVALUATIONS[evaluation][0]
    kinds = [judge(stage_mious(results, a, key), stage_mious(results, b, key))[0]
             for _, a, b in comparisons(evaluation)]
    return {k: kinds.count(k) for k in KINDS}


def verdicts(results: dict, evaluation: str = "as_trained") -> list[str]:
    """The verdict of every comparison judged under `evaluation` (`comparisons`) from
    results.json, on target test per seed."""
    key = EVALUATIONS[evaluation][0]
    titles = {s["stage"]: s["title"] for s in results["stages"]}
    return [verdict(what, stage_mious(results, a, key), titles[b],
                    stage_mious(results, b, key), split="target test")
            for what, a, b in comparisons(evaluation)]


def verdict_records(results: dict) -> list[dict]:
    """Every comparison's test (`paired_test` on target test) under each of EVALUATIONS
    (`comparisons`), with its stage and baseline, as results.json keeps them."""
    return [{"what": what, "stage": a, "baseline": b, "split": "target_test",
             "evaluation": evaluation,
             **paired_test(stage_mious(results, a, key), stage_mious(results, b, key))}
            for evaluation, (key, _) in EVALUATIONS.items()
            for what, a, b in comparisons(evaluation)]


def statistics_choice(results: dict) -> dict:
    """Whether target BatchNorm statistics at evaluation belong in the recipe, decided on
    target val (never test): the paired test over the seeds of the full UDA recipe
    (uda_pixel) scored with target statistics against as trained. Chosen when the test says
    "helps"; the record says so in "chosen"."""
    name = "uda_pixel"
    a = stage_mious(results, name, EVALUATIONS["target_statistics"][1])
    b = stage_mious(results, name, EVALUATIONS["as_trained"][1])
    t = paired_test(a, b)
    return {"stage": name, "split": "target_val", "target_statistics_miou": a,
            "as_trained_miou": b, **t, "chosen": t["verdict"] == "helps"}


def adversarial_weights(record: dict, cfg) -> list[dict]:
    """Each adversarial weight of a mechanisms record (figures/mechanisms.json, `wsda
    mechanisms`) beside the value the series trains with (`cfg`, a config.Config): the
    paper's, the rule's choice at the record's seed on target val (0.0: the term off), and,
    for a weight it chose, whether the choice held over the seeds on target val (the paired
    test against the term off says "helps"), with the record's commit. The series' stages keep
    the paper's weights whatever the rule chose (docs/method.md §16)."""
    rows = []
    for t in record["terms"]:
        section, name = t["field"].split(".")
        c = t.get("confirmation")
        rows.append({"term": t["name"], "field": t["field"], "paper": t["paper"],
                     "series": getattr(getattr(cfg, section), name),
                     "rule_choice": t["chosen"], "chosen_on": record["chosen_on"],
                     "seed": record["seed"],
                     "confirmed": None if c is None else c["verdict"] == "helps",
                     "confirmation_gain": None if c is None else c["gain"],
                     "confirmation_verdict": None if c is None else c["verdict"],
                     "record": "figures/mechanisms.json", "record_commit": record["commit"]})
    return rows


def weights_markdown(rows: list[dict]) -> list[str]:
    """adversarial_weights as the sentences of results.md: one per term."""
    lines = []
    for w in rows:
        if not w["rule_choice"]:
            said = "the rule kept the term off: no weight beat it by its margin"
        else:
            held = "held" if w["confirmed"] else "did not hold"
            said = (f"the rule chose {w['rule_choice']:g} at seed {w['seed']}, which {held} over "
                    f"the seeds ({w['confirmation_gain']:+.2f} on "
                    f"{w['chosen_on'].replace('_', ' ')}: {w['confirmation_verdict']})")
        lines.append(f"- {w['term']}: trained at {w['field']} = {w['series']:g} (the paper's "
                     f"{w['paper']:g}); in the record (commit {w['record_commit']}) {said}.")
    return lines


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def summarise(per_seed: dict, titles: dict, class_names, meta: dict) -> dict:
    """The content of results.json from per_seed[stage][seed] = metrics dict: per stage the
    target-test mIoU of every seed, mean ± std, the gap closed (from the per-seed source-only
    and oracle of the same seed), per-class mean IoU; the paper's numbers beside them."""
    seeds = sorted(next(iter(per_seed.values())))
    src = {s: per_seed["source_only"][s]["target_test"]["miou"] for s in seeds}
    orc = {s: per_seed["oracle"][s]["target_test"]["miou"] for s in seeds}
    paper = registry.paper_miou()
    paper_src, paper_orc = paper["source_only"], paper["oracle"]
    stages = []
    for name, by_seed in per_seed.items():
        mious = [by_seed[s]["target_test"]["miou"] for s in seeds]
        gaps = [100 * gap_closed(by_seed[s]["target_test"]["miou"], src[s], orc[s])
                for s in seeds]
        ious = np.array([by_seed[s]["target_test"]["iou"] for s in seeds], dtype=float)
        stages.append({
            "stage": name, "title": titles[name],
            "miou_per_seed": mious,
            "miou_mean": mean_std(mious)[0], "miou_std": mean_std(mious)[1],
            "target_val_miou_per_seed": [by_seed[s]["target_val"]["miou"] for s in seeds],
            "target_val_miou_mean": mean_std([by_seed[s]["target_val"]["miou"]
                                              for s in seeds])[0],
            EVALUATIONS["target_statistics"][0]: [
                by_seed[s]["target_statistics"]["target_test"]["miou"] for s in seeds],
            EVALUATIONS["target_statistics"][1]: [
                by_seed[s]["target_statistics"]["target_val"]["miou"] for s in seeds],
            "gap_closed_mean": mean_std(gaps)[0], "gap_closed_std": mean_std(gaps)[1],
            "iou_mean": np.nanmean(ious, axis=0).tolist() if len(ious) else [],
            "paper_miou": paper.get(name),
            "paper_gap_closed": None if paper.get(name) is None else
            100 * gap_closed(paper[name], paper_src, paper_orc),
            **_pseudo_weak(by_seed, seeds),
        })
    out = {**meta, "seeds": seeds, "split": "target_test", "classes": list(class_names),
           "stages": stages}
    return {**out, "verdicts": verdict_records(out), "statistics_choice":
            statistics_choice(out)}


def study_table(study: dict) -> pd.DataFrame:
    """The weak-label study (figures/study.json, study.py) as one table: per probe its part,
    target val mIoU (what the study chooses on), and the end of training's pseudo-weak
    labels: precision and recall (%), mean P_c (%) of truly absent classes, and the mean
    logit from the start of adaptation to its end."""
    rows = {}
    parts = [("reference", study["references"].items()),
             ("one factor", ((r["name"], r) for r in study["drivers"])),
             ("fix", ((r["name"], r) for r in study["candidates"]))]
    for part, probes in parts:
        for name, r in probes:
            rows[name] = {"part": part, "target val mIoU": r["target_val_miou"],
                          "precision": r.get("pseudo_precision"),
                          "recall": r.get("pseudo_recall"),
                          "P_c absent (%)": None if "score_absent" not in r
                          else 100 * r["score_absent"],
                          "mean logit": None if "mean_logit" not in r else
                          f"{r['mean_logit_start']:.2f} -> {r['mean_logit']:.2f}"}
    table = pd.DataFrame.from_dict(rows, orient="index")
    numbers = ["target val mIoU", "precision", "recall", "P_c absent (%)"]
    table[numbers] = table[numbers].astype(float).round(1)
    return table


def _pseudo_weak(by_seed: dict, seeds) -> dict:
    """For a stage trained on pseudo-weak labels: their micro precision and recall (%) on
    the target training images against the GT image labels, from the starting model and
    from the final one (stages.pseudo_weak_quality), each as [per seed] and mean."""
    if not all("pseudo_weak_end" in by_seed[s] for s in seeds):
        return {}
    out = {}
    for when in ("start", "end"):
        for what in ("precision", "recall"):
            values = [by_seed[s][f"pseudo_weak_{when}"][what] for s in seeds]
            out[f"pseudo_weak_{what}_{when}"] = {"per_seed": values,
                                                 "mean": mean_std(values)[0]}
    return {"pseudo_weak_labels": out}


def _fmt(x, spec=".1f", suffix=""):
    return "—" if x is None else format(x, spec) + suffix


def render_markdown(results: dict) -> str:
    """The results table as Markdown; figures/results.md is exactly this of results.json."""
    lines = [
        f"# Results: {results['preset']} preset, {len(results['seeds'])} seed(s) "
        f"{results['seeds']}",
        "",
        "mIoU (%) on the embedded benchmark's target test split, mean ± std over seeds; "
        "gap closed = (stage − source-only) / (oracle − source-only). The paper's columns "
        "are GTA5 → Cityscapes (docs/method.md §9).",
        "",
        "| stage | paper mIoU | paper gap closed | ours mIoU | ours gap closed | ours with "
        "target BN statistics |",
        "|---|---|---|---|---|---|",
    ]
    for s in results["stages"]:
        ts = mean_std(s[EVALUATIONS["target_statistics"][0]])
        lines.append(f"| {s['title']} | {_fmt(s['paper_miou'])} | "
                     f"{_fmt(s['paper_gap_closed'], '.0f', '%')} | "
                     f"{s['miou_mean']:.1f} ± {s['miou_std']:.1f} | "
                     f"{s['gap_closed_mean']:.0f} ± {s['gap_closed_std']:.0f}% | "
                     f"{ts[0]:.1f} ± {ts[1]:.1f} |")
    chosen = results.get("statistics_choice", {}).get("chosen")
    lines += ["", "Ours as trained: every stage scored with the BatchNorm running statistics "
              "it ended training with. With target BN statistics: the same weights with those "
              "statistics re-estimated on target train (AdaBN, method.adabn), which takes "
              "BatchNorm statistics out of every comparison. " + (
                  "The recipe's evaluation is the second (domain-specific BatchNorm statistics, "
                  "chosen on target val: see below)." if chosen else
                  "The recipe's evaluation is the first: target statistics were not chosen on "
                  "target val (see below).")]
    weak = [s for s in results["stages"] if "pseudo_weak_labels" in s]
    if weak:
        lines += ["", "Pseudo-weak labels of the UDA stages on the target training images, "
                  "against the ground-truth image labels (read only to report this): micro "
                  "precision and recall (%), mean over seeds, of the starting model -> of the "
                  "final one, both in eval mode (BatchNorm's running statistics).", "",
                  "| stage | precision | recall |", "|---|---|---|"]
        for s in weak:
            w = s["pseudo_weak_labels"]
            lines.append(f"| {s['title']} | {w['pseudo_weak_precision_start']['mean']:.1f} -> "
                         f"{w['pseudo_weak_precision_end']['mean']:.1f} | "
                         f"{w['pseudo_weak_recall_start']['mean']:.1f} -> "
                         f"{w['pseudo_weak_recall_end']['mean']:.1f} |")
    lines += verdicts_markdown(results)
    if results.get("weights"):
        lines += ["", "The adversarial weights, against the record of each term over its strength "
                  "(`make mechanisms`, docs/method.md §16; chosen on target val):", "",
                  *weights_markdown(results["weights"])]
    lines += ["", *power_markdown(results)]
    if results.get("controls"):
        lines += ["", "Controls (`make ablation`, docs/method.md §15), judged by the same rule:",
                  "", *controls_markdown(results["controls"])]
    lines += ["", f"Measured {results['date']} on {results['machine']} "
              f"(commit {results['commit']}).", ""]
    return "\n".join(lines)


def verdicts_markdown(results: dict) -> list[str]:
    """The verdicts of results.json as the lines of one Markdown table (each step scored as
    trained and with target BatchNorm statistics), and the choice of the evaluation's
    statistics on target val (`statistics_choice`)."""
    lines = []
    lines += ["", f"Verdicts: {TEST}, on target test, {100 * LEVEL:.0f}% confidence interval "
              f"of the mean paired gain (mIoU); \"helps\" or \"hurts\" when the interval "
              f"excludes 0. Each step is scored as trained, and with target BN statistics.", "",
              "| step | against | scored | mean gain | interval | p | verdict |",
              "|---|---|---|---|---|---|---|"]
    titles = {s["stage"]: s["title"] for s in results["stages"]}
    scored = {"as_trained": "as trained", "target_statistics": "target BN statistics"}
    order = [w for w, _, _ in registry.comparisons()]
    for v in sorted(results["verdicts"], key=lambda v: order.index(v["what"])):
        interval = ("—" if v["ci_low"] is None else
                    f"[{v['ci_low']:+.2f}, {v['ci_high']:+.2f}]")
        lines.append(f"| {v['what']} | {titles[v['baseline']]} | {scored[v['evaluation']]} | "
                     f"{v['gain']:+.2f} | {interval} | {_fmt(v['p'], '.3f')} | "
                     f"{v['verdict']} |")
    c = results.get("statistics_choice")
    if c:
        interval = "" if c["ci_low"] is None else (f", 95% CI [{c['ci_low']:+.2f}, "
                                                   f"{c['ci_high']:+.2f}]")
        lines += ["", f"Target BN statistics at evaluation, decided on target val for the "
                  f"full UDA recipe: {np.mean(c['target_statistics_miou']):.1f} against "
                  f"{np.mean(c['as_trained_miou']):.1f} as trained (paired gain "
                  f"{c['gain']:+.2f}{interval}): "
                  f"{'chosen' if c['chosen'] else 'not chosen'}."]
    return lines


def controls_markdown(rows: list[dict]) -> list[str]:
    """The control rows of ablation.json (stages.registry.controls, each with its `paired_test` on
    target test) as the lines of one Markdown table: per row both stages' mean ± std over
    the seeds, the mean paired gain, its interval, p and the verdict."""
    lines = ["| claim | stage | control | stage mIoU | control mIoU | mean gain | interval | p "
             "| verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        (ma, sa), (mb, sb) = (mean_std(r["stage_miou"]["target_test"]),
                              mean_std(r["control_miou"]["target_test"]))
        interval = "—" if r["ci_low"] is None else f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
        lines.append(f"| {r['what']} | {r['stage_title']} | {r['control_title']} | "
                     f"{ma:.1f} ± {sa:.1f} | {mb:.1f} ± {sb:.1f} | {r['gain']:+.2f} | "
                     f"{interval} | {_fmt(r['p'], '.3f')} | {r['verdict']} |")
    return lines


def attach_controls(results: dict, record: dict) -> dict:
    """results.json's content with the control rows of an ablation record (ablation.json)
    under "controls", when both measured the same preset and seeds and every stage they
    share has the same per-seed numbers (the same runs); otherwise `results` unchanged, as
    such controls are not paired with these stages."""
    if (record.get("preset"), record.get("seeds")) != (results["preset"], results["seeds"]):
        return results
    if _unpaired_controls(results, record["controls"]):
        return results
    return {**results, "controls": record["controls"], "controls_commit": record["commit"]}


def _unpaired_controls(results: dict, rows: list[dict]) -> list[str]:
    """The control rows whose stage (or control) is also a stage of the series but with
    other per-seed numbers: rows measured on other runs (another benchmark, an older
    series), which are not paired with these stages. As "what: stage"."""
    series = {s["stage"]: s for s in results["stages"]}
    bad = []
    for r in rows:
        for name, miou in ((r["stage"], r["stage_miou"]), (r["control"], r["control_miou"])):
            s = series.get(name)
            if s and (miou["target_test"] != s["miou_per_seed"] or
                      miou["target_val"] != s.get("target_val_miou_per_seed")):
                bad.append(f"{r['what']}: {name}")
    return bad


def write_results(results: dict, figures_dir) -> None:
    """results.json and its Markdown table results.md, atomically, into figures_dir."""
    figures_dir = Path(figures_dir)
    write_json(figures_dir / "results.json", results)
    atomic_write(figures_dir / "results.md", lambda f: f.write(render_markdown(results).encode()))


def validate(results: dict) -> None:
    """Check results.json against its schema; raise ValueError naming the first problem."""
    def check(ok, what):
        if not ok:
            raise ValueError(f"results.json: {what}")

    for key in ("preset", "commit", "date", "machine", "seeds", "classes", "stages",
                "verdicts"):
        check(key in results, f"missing key {key!r}")
    rows = list(registry.result_stages())
    check([s.get("stage") for s in results["stages"]] == rows, f"stages must be {rows} in order")
    n_seeds, n_classes = len(results["seeds"]), len(results["classes"])
    check(n_seeds >= 1, "no seeds")
    for s in results["stages"]:
        name = s["stage"]
        check(len(s["miou_per_seed"]) == n_seeds, f"{name}: one mIoU per seed expected")
        check(len(s.get("target_val_miou_per_seed", [])) == n_seeds,
              f"{name}: one target val mIoU per seed expected (target_val_miou_per_seed); "
              f"a results.json from an older version: run notebook 06 again")
        check(all(0 <= m <= 100 for m in s["miou_per_seed"]), f"{name}: mIoU outside 0..100")
        check(0 <= s["miou_mean"] <= 100 and s["miou_std"] >= 0, f"{name}: bad mean/std")
        check(len(s["iou_mean"]) == n_classes, f"{name}: one IoU per class expected")
        check(s["paper_miou"] is None or 0 < s["paper_miou"] < 100, f"{name}: bad paper mIoU")
    by = {s["stage"]: s for s in results["stages"]}
    for name in registry.pseudo_weak_rows():
        check("pseudo_weak_labels" in by[name], f"{name}: the precision and recall of its "
              f"pseudo-weak labels are missing (pseudo_weak_labels); run notebook 06 again")
    for s in results["stages"]:
        check(all(len(s.get(k, [])) == n_seeds for pair in EVALUATIONS.values() for k in pair),
              f"{s['stage']}: one target-statistics mIoU per seed expected; a results.json "
              f"from an older version: run notebook 06 again")
    check(results["verdicts"] == verdict_records(results), "verdicts are not the rule's "
          "(paired_test on each stage's target test mIoU per seed); run notebook 06 again")
    check(results.get("statistics_choice") == statistics_choice(results),
          "statistics_choice is not the rule's (results.statistics_choice); run notebook 06 "
          "again")
    for r in results.get("controls", []):
        a, b = r["stage_miou"]["target_test"], r["control_miou"]["target_test"]
        check(len(a) == len(b) == n_seeds and {k: r.get(k) for k in paired_test(a, b)} ==
              paired_test(a, b), f"control {r.get('what')!r}: not the rule's test "
              f"(paired_test on target test over the seeds {results['seeds']}); run make "
              f"ablation again")
    unpaired = _unpaired_controls(results, results.get("controls", []))
    check(not unpaired, f"controls of other runs than the series' stages ({unpaired[:1]}); "
          f"run make ablation again")
    check(abs(by["source_only"]["gap_closed_mean"]) < 1e-6, "source-only must close 0% gap")
    check(abs(by["oracle"]["gap_closed_mean"] - 100) < 1e-6, "oracle must close 100% gap")
