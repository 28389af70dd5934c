"""Every number the prose states comes from somewhere a reader can check.

A series notebook's markdown (its source, as students read it; 07, outside the series, quotes
the paper's SYNTHIA numbers and is checked by tests/prose/test_prose.py) types no measured number:
what the notebooks report about a run they render from the run ("what we saw", nb.saw), and
tests/test_notebooks.py ties that to results.json. A decimal number or a percentage in a
notebook's markdown must be one of:
* the paper's numbers, as results.json and benchmark_calibration.json record them;
* a setting of the presets (config.preset), or one derived from a setting (DERIVED);
* a hand computation on the notebook's tiny tensor, recomputed here from its expression (HAND);
* a fixed point of a definition (DEFINITIONS), with the reason it is not measured.
A setting or paper number agrees with a number in the text only as itself, not as a percentage
of it (0.95 is not "95%"), so a number typed at random passes this check about one time in
twenty at one decimal (test_a_number_from_nowhere_is_caught measures it). A hand computation
or a definition is accepted anywhere in its notebook, not only at its place.
The README's results prose may also quote the committed records (figures/results.json,
ablation.json, study.json's reported values, benchmark_calibration.json, mechanisms.json), or
the mean or standard deviation of one of their lists, at the precision the text gives, and the
numbers one clause states together must be one object's (`unbound`). That check is weaker for a
number alone in its clause (test_a_number_typed_into_the_readme_is_caught_mostly measures how
weak); the tables beside it are checked exactly (tests/test_results.py).
Numbers inside `code spans` are inputs a reader types, and whole numbers without % are counts,
sizes and names; neither is a claim.
"""

import dataclasses
import inspect
import json
import math
import re
import statistics
from pathlib import Path

import pytest
from scipy import stats

from wsda_lib.core.config import preset
from wsda_lib.experiments.reproduce import series
from wsda_lib.records.results import render_markdown, verdict

REPO = Path(__file__).resolve().parents[2]
RECORDS = ("results.json", "ablation.json", "study.json", "benchmark_calibration.json",
           "mechanisms.json")
# A number: not part of a word, a version (2.14.1) or a longer number; a sentence's full stop
# after it is allowed.
NUMBER = re.compile(r"(?<![\w.§/])[-+−]?(\d+(?:\.\d+)?)(%?)(?!\.?\d|\w)")
CODE_SPAN = re.compile(r"`[^`]*`")

_D = preset("default")
_LEVEL = inspect.signature(verdict).parameters["level"].default
DERIVED = {  # settings the prose states in another form
    "the verdicts' confidence level, in %": 100 * _LEVEL,
    "log(N / hw)": math.log(_D.adapt.pool_positions / 128),
    "T with N = 8385, on the paper's pooling": 1 / (1 + math.exp(
        -(math.log(0.2 / 0.8) + math.log(_D.adapt.pool_positions / 128)))),
}
sigma = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
# Per notebook: the tiny tensor's hand computations, as the expression that gives each.
HAND = {
    "00": {"6.25": 100 / 16, "5": 100 * 0.1 * 0.5, "8": 80 * 0.1,
           "50": 50, "80": 80},   # the typical areas the example gives its two classes
    "01": {"50": 100 * 1 / (2 + 1 - 1), "66.7": 100 * 2 / (2 + 3 - 2),
           "58.3": (50 + 100 * 2 / 3) / 2, "75": 100 * 3 / 4},
    "02": {"0.753": math.log((math.e ** 2 + 3 * math.e ** -1) / 4),
           "0.680": sigma(math.log((math.e ** 2 + 3 * math.e ** -1) / 4)),
           "0.047": sigma(-3), "0.953": 1 - sigma(-3),
           "0.217": -(math.log(sigma(math.log((math.e ** 2 + 3 / math.e) / 4)))
                      + math.log(1 - sigma(-3))) / 2,
           "0.88": sigma(2), "-0.25": (2 - 3) / 4, "0.44": sigma(-0.25)},
    "03": {"0.25": 1 / 4, "0.75": 3 / 4},
    "04": {"0.95": 0.95, "0.60": 0.60, "0.80": 0.80, "0.99": 0.99,
           "0.775": statistics.median([0.95, 0.60]), "0.895": statistics.median([0.80, 0.99]),
           "5": 5},   # its own threshold of a "frequent" class (share_of_labels > 5)
    "05": {"0.881": math.e ** 2 / (math.e ** 2 + 1), "0.127": -math.log(math.e ** 2 /
                                                                       (math.e ** 2 + 1)),
           "0.693": math.log(2), "0.410": (math.log(1 + math.e ** -2) + math.log(2)) / 2},
    "06": {"1.5": statistics.mean([1, 1.5, 2]), "0.975": 1 - (1 - _LEVEL) / 2,
           "0.289": statistics.stdev([1, 1.5, 2]) / math.sqrt(3),
           "4.30": stats.t.ppf(1 - (1 - _LEVEL) / 2, 2), "1.96": stats.norm.ppf(0.975),
           "0.26": 1.5 - stats.t.ppf(0.975, 2) * 0.5 / math.sqrt(3),
           "2.74": 1.5 + stats.t.ppf(0.975, 2) * 0.5 / math.sqrt(3),
           "33.0": 33.0, "30.0": 30.0},   # the exercise's toy values
    "A": {"4.61": math.log(400 / 4), "-4.61": -math.log(400 / 4),
          "0.010": sigma(-math.log(100))},
}
# Fixed points of definitions, not measurements.
DEFINITIONS = {"50": "chance for a discriminator of two domains",
               "100": "the ends of a precision, recall or accuracy scale",
               "0.8": "the T of one probe of the study, a setting it tried"}


def _leaves(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from _leaves(v)
    elif isinstance(x, list):
        numbers = [v for v in x if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) > 1 and len(numbers) == len(x):
            yield statistics.mean(numbers)
            yield statistics.stdev(numbers)
        for v in x:
            yield from _leaves(v)
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        yield float(x)


def _study(study: dict) -> list:
    """What the study reports: each probe's scalars, the grid, the source-only presence sweep,
    and the first and last window of the paper's recipe (not its per-window, per-class
    histories and histograms, which no prose quotes)."""
    probes = [{k: v for k, v in probe.items() if not isinstance(v, list)}
              for probe in [*study["references"].values(), *study["drivers"],
                            *study["candidates"]]]
    history = study["paper_history"]
    ends = [history[k][i] for k in ("pseudo_precision", "pseudo_recall", "score_absent",
                                    "score_present", "mean_logit") for i in (0, -1)]
    return [probes, study["grid"], study["chosen_grid"], study["source_only_presence"]["sweep"],
            ends]


def _record(name: str):
    return json.loads((REPO / "figures" / name).read_text())


def _settings() -> list[float]:
    values = [v for name in ("default", "paper_gta5") for v in
              _leaves(json.loads(json.dumps(dataclasses.asdict(preset(name)), default=str)))]
    return values + list(DERIVED.values())


def _paper() -> list[float]:
    stages = _record("results.json")["stages"]
    calibration = _record("benchmark_calibration.json")
    return [v for s in stages for v in (s["paper_miou"], s["paper_gap_closed"])
            if v is not None] + list(_leaves([calibration["paper_source_only"],
                                              calibration["paper_ten_class_miou"]]))


def _records() -> list[float]:
    records = {name: _record(name) for name in RECORDS}
    records["study.json"] = _study(records["study.json"])
    return [v for record in records.values() for v in _leaves(record)]


NOTEBOOK_VALUES = _settings() + _paper()
README_VALUES = NOTEBOOK_VALUES + _records()


def _agrees(token: str, value: float) -> bool:
    decimals = len(token.split(".")[1]) if "." in token else 0
    return abs(float(token) - value) <= 0.5 * 10 ** -decimals + 1e-9


def unexplained(text: str, hand: dict, values: list[float], percent: bool = False) -> list[str]:
    """The decimal numbers and percentages of `text` that neither `hand` (token -> value),
    DEFINITIONS nor `values` accounts for, each with its context. percent: a value v <= 1
    also accounts for 100 v (records keep some shares as fractions)."""
    text = CODE_SPAN.sub(" ", text)
    found = []
    for m in NUMBER.finditer(text):
        token, sign = m.group(1), m.group(2)
        signed = m.group(0).rstrip("%").replace("−", "-").lstrip("+")
        if "." not in token and not sign:
            continue
        if signed in hand and _agrees(signed.lstrip("-"), abs(hand[signed])):
            continue
        if token in hand and _agrees(token, abs(hand[token])):
            continue
        if token in DEFINITIONS or any(_agrees(token, abs(v)) or
                                       (percent and abs(v) <= 1 and
                                        _agrees(token, abs(100 * v)))
                                       for v in values):
            continue
        found.append(text[max(0, m.start() - 50):m.end() + 10].replace("\n", " "))
    return found


def _markdown(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


@pytest.mark.parametrize("path", series(), ids=lambda p: p.name)
def test_every_number_a_notebook_states_comes_from_the_records_or_is_worked_out(path):
    prefix = path.name.split("_")[0]
    assert not unexplained(_markdown(path), HAND.get(prefix, {}), NOTEBOOK_VALUES)


def _grouped(x, path=()):
    """(value, path of the object that holds it) for each number of a record, as _leaves
    gives them: a list of numbers gives its elements, mean and standard deviation to the
    object the list belongs to; a list of objects gives each its own path."""
    if isinstance(x, dict):
        for k, v in x.items():
            numbers = [u for u in v if isinstance(u, (int, float)) and not isinstance(u, bool)] \
                if isinstance(v, list) else []
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                yield float(v), path
            elif numbers and len(numbers) == len(v):
                yield from ((float(u), path) for u in numbers)
                if len(numbers) > 1:
                    yield statistics.mean(numbers), path
                    yield statistics.stdev(numbers), path
            elif isinstance(v, (dict, list)):
                yield from _grouped(v, path + (k,))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _grouped(v, path + (i,))


def _readme_groups() -> list[tuple[float, tuple]]:
    records = {name: _record(name) for name in RECORDS}
    records["study.json"] = {"reported": _study(records["study.json"])}
    return [(v, (name, *path)) for name, r in records.items() for v, path in _grouped(r)]


# A clause: the text between ; ( ) , "against", a dash or a sentence's end. The numbers one
# clause states together (an interval's two ends) come from one object of one record.
CLAUSE = re.compile(r"[;(),]|[.:](?=\s)|\n\n| against | — ")
BOUND_DEPTH = 3  # the record file, its top-level key and the object: one verdict, one stage


def unbound(text: str, groups: list, free: list[float], percent: bool = True) -> list[str]:
    """The clauses of `text` whose decimal numbers and percentages are not all accounted for
    by one part of one record: a number that no record value explains (as `unexplained`), or
    two or more numbers that `free` (settings, the paper) and DEFINITIONS leave to the records
    and that no one record part (the first BOUND_DEPTH steps of a value's path in `groups`,
    `_readme_groups`) holds together."""
    text = CODE_SPAN.sub(" ", text)
    found = []
    for clause in CLAUSE.split(text.replace("\n", " ").replace("  ", " ")):
        parts = []
        for m in NUMBER.finditer(clause):
            token, sign = m.group(1), m.group(2)
            if ("." not in token and not sign) or token in DEFINITIONS or \
                    any(_agrees(token, abs(v)) for v in free):
                continue
            held = {path[:BOUND_DEPTH] for v, path in groups if _agrees(token, abs(v)) or
                    (percent and sign and abs(v) <= 1 and _agrees(token, abs(100 * v)))}
            parts.append(held)
        if parts and not set.intersection(*parts):
            found.append(clause.strip()[:120])
    return found


def _readme_results() -> str:
    readme = (REPO / "README.md").read_text()
    results = readme[readme.index("## Results"):readme.index("## Reproduce the figures")]
    # the lines the code renders from results.json are checked exactly by test_results.py
    rendered = set(render_markdown(_record("results.json")).splitlines())
    return "\n".join(line for line in results.splitlines() if line not in rendered)


def test_every_number_of_the_readmes_results_comes_from_the_records():
    assert not unbound(_readme_results(), _readme_groups(), NOTEBOOK_VALUES)


def test_a_number_typed_into_the_readme_is_caught_mostly():
    """How often a number typed at random passes the README check. As the other end of an
    interval whose first end a record holds, about one time in ten (the interval's ends must
    be one object's); alone in its clause, as often as some record value agrees with it at
    the precision typed: about one time in four at two decimals and one in two at one
    decimal, over the ~2,900 values the records hold. The lone number is the check's weak
    half: the README's results prose is typed, not rendered."""
    groups, free = _readme_groups(), NOTEBOOK_VALUES
    verdicts = _record("results.json")["verdicts"]
    typed = [f"{x / 100:+.2f}" for x in range(-1000, 1000, 37)]
    beside = [sum(not unbound(f"gain {v['gain']:+.2f}, interval {v['ci_low']:+.2f} to {x}",
                              groups, free) for x in typed) / len(typed) for v in verdicts[:6]]
    assert max(beside) < 0.15
    alone = sum(not unbound(f"it scores {x}", groups, free) for x in typed) / len(typed)
    assert 0.15 < alone < 0.35
    assert unbound("gain +0.52, interval +0.15 to +9.99", groups, free)


def test_a_number_from_nowhere_is_caught():
    assert unexplained("the gain is 3.17 mIoU, 42.42% of the gap", {}, [3.2, 0.4242],
                       percent=True) == ["the gain is 3.17 mIoU, 42."]
    assert unexplained("`--set x=3.17`, 12 images", {}, []) == []
    assert unexplained("it is 0.680", {"0.680": 0.6798}, []) == []
    assert unexplained("it is 0.690", {"0.690": 0.6798}, []) != []
    # a measured number typed into a notebook is refused even when a record holds it
    source_only = _record("results.json")["stages"][0]["miou_mean"]
    assert unexplained(f"source-only scores {source_only:.1f}", {}, NOTEBOOK_VALUES) != []
    assert unexplained(f"source-only scores {source_only:.1f}", {}, README_VALUES) == []
    # how often a number typed at random passes the notebooks' check: about one in twenty
    typed = [f"{x / 10:.1f}" for x in range(0, 1000, 7)]
    passed = sum(not unexplained(x, {}, NOTEBOOK_VALUES) for x in typed) / len(typed)
    assert passed < 0.1
