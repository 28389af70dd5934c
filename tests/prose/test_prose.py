"""Prose that states a setting is true of the code: every setting a notebook's text names is
checked here against the preset it describes (notebooks 00-06 and appendix A: default; 07:
paper_gta5)."""

import inspect
import re
from pathlib import Path

import nbformat
import pytest

from wsda_lib.core.config import preset
from wsda_lib.records.results import verdict

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
D, P = preset("default"), preset("paper_gta5")
N = r"\d+(?:\.\d+)?(?:e-\d+)?"  # a number, without the full stop after it

# (notebook, the sentence's words, with (?P<v>...) around the number, the config's value)
CLAIMS = [
    ("00", r"more than (?P<v>\d+)% of its \*typical area\*", 100 * D.data.weak_label_fraction),
    ("02", rf"\$y_c = 1\[P_c > (?P<v>{N})\]\$", D.adapt.pseudo_threshold),
    ("02", rf"threshold T = (?P<v>{N})", D.adapt.pseudo_threshold),
    ("02", rf"with \$r = (?P<v>{N})\$", D.adapt.smooth_max_r),
    ("02", r"the pooling divides by N = (?P<v>\d+) positions", D.adapt.pool_positions),
    ("A", r"The default pools over N = (?P<v>\d+) positions", D.adapt.pool_positions),
    ("05", r"the UDA rows over N = (?P<v>\d+) positions", D.adapt.pool_positions),
    ("05", rf"weight λ_point = (?P<v>{N})", D.adapt.lambda_point),
    ("02", rf"dropout \(p = (?P<v>{N})\)", D.adapt.weak_dropout),
    ("02", rf"λ_adv = (?P<v>{N})", D.adapt.lambda_adv),
    ("02", rf"UDA, λ_c = (?P<v>{N})", D.adapt.lambda_c),
    ("02", rf"WDA, λ_c = (?P<v>{N})", D.adapt.lambda_c_human),
    ("03", rf"λ_cw = (?P<v>{N})", D.adapt.lambda_cw),
    ("04", rf"\$y_c = 1\[P_c > (?P<v>{N})\]\$", D.adapt.pseudo_threshold),
    ("04", r"with probability one (?P<v>half)", D.adapt.fda_prob),
    ("04", r"the (?P<v>median) confidence of each predicted class", D.adapt.st_quantile),
    ("04", r"with (?P<v>no) cap, so each class", D.adapt.st_cap),
    ("04", rf"β = (?P<v>{N}): at 64", D.adapt.fda_beta),
    ("05", rf"WDA, λ_c = (?P<v>{N}) instead", D.adapt.lambda_c_human),
    ("05", rf"instead of (?P<v>{N})\)", D.adapt.lambda_c),
    ("07", rf"SGD at (?P<v>{N}) with", P.train.lr),
    ("07", r"classifier at (?P<v>\d+)×", P.train.head_lr_mult),
    ("07", r"poly decay over (?P<v>\d+)k steps", P.train.poly_horizon / 1000),
    ("07", r"stopped at (?P<v>\d+)k", P.train.iterations / 1000),
    ("07", rf"Adam (?P<v>{N}),", P.adapt.disc_lr),
    ("07", rf"λ_cw = (?P<v>{N})", P.adapt.lambda_cw),
    ("07", rf"T = (?P<v>{N})", P.adapt.pseudo_threshold),
    ("07", r"batch (?P<v>\d+),", P.train.batch_size),
]
WORDS = {"half": 0.5, "median": 0.5, "no": 1.0}   # "no cap": thresholds capped at 1


def _markdown(prefix: str) -> str:
    [path] = NOTEBOOKS.glob(f"{prefix}_*.ipynb")
    return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells
                     if c.cell_type == "markdown")


@pytest.mark.parametrize("notebook, words, value", CLAIMS)
def test_a_setting_the_text_states_is_the_configs(notebook, words, value):
    found = re.search(words, " ".join(_markdown(notebook).split()))
    assert found, f"notebook {notebook} no longer says {words!r}: update CLAIMS"
    stated = found["v"]
    assert WORDS.get(stated, None if stated in WORDS else float(stated)) == pytest.approx(value)


@pytest.mark.parametrize("notebook", ["02", "06"])
def test_the_verdict_rule_the_text_states_is_the_codes(notebook):
    text = " ".join(_markdown(notebook).split())
    assert "paired t-test" in text and "95% confidence interval" in text
    assert "results.paired_test" in text
    assert inspect.signature(verdict).parameters["level"].default == 0.95
    assert inspect.signature(verdict).parameters["split"].default is inspect.Parameter.empty
