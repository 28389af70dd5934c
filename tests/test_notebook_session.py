"""The notebook session checks its parameters before any work, naming what is wrong."""

import pytest

from wsda_lib.teaching.session import check_parameters

GOOD = {"PRESET": "smoke", "SEED": 0, "DEVICE": "cpu", "RUN_DIR": "../runs",
        "FIGURES_DIR": None, "INTERACTIVE": False, "In": [], "_": None, "np": object()}


def test_good_parameters_pass_and_lowercase_names_are_not_parameters():
    from wsda_lib.records.results import EVALUATIONS  # an imported constant is not a parameter

    given = check_parameters({**GOOD, "EVALUATIONS": EVALUATIONS})
    assert set(given) == {"PRESET", "SEED", "DEVICE", "RUN_DIR", "FIGURES_DIR", "INTERACTIVE"}
    assert check_parameters({**GOOD, "SEEDS": 3}, extra=("SEEDS",))["SEEDS"] == 3


@pytest.mark.parametrize("change, message", [
    ({"EPOCHS": 3}, r"unknown parameter\(s\) \['EPOCHS'\]; this notebook takes \['PRESET'"),
    ({"SEED": "notanumber"}, r"SEED='notanumber': expected a whole number >= 0"),
    ({"SEED": 1.5}, r"SEED=1.5: expected a whole number"),
    ({"SEED": True}, r"SEED=True"),
    ({"PRESET": "smok"}, r"PRESET='smok': expected one of \['smoke'"),
    ({"DEVICE": "gpu"}, r"DEVICE='gpu': expected 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'"),
    ({"INTERACTIVE": "yes"}, r"INTERACTIVE='yes': expected True or False"),
    ({"FIGURES_DIR": 3}, r"FIGURES_DIR=3"),
])
def test_bad_parameters_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        check_parameters({**GOOD, **change})


def test_the_notebooks_own_module_does_not_hide_its_parameters():
    import sys
    import types

    module = types.ModuleType("fake_notebook")
    vars(module).update({**GOOD, "EPOCHS": 3})
    sys.modules["fake_notebook"] = module
    try:
        with pytest.raises(ValueError, match="EPOCHS"):
            check_parameters(vars(module))
    finally:
        del sys.modules["fake_notebook"]


def test_seeds_must_be_positive_and_missing_parameters_are_named():
    with pytest.raises(ValueError, match="SEEDS=0: expected a whole number >= 1"):
        check_parameters({**GOOD, "SEEDS": 0}, extra=("SEEDS",))
    with pytest.raises(ValueError, match=r"\['SEEDS'\] are not set"):
        check_parameters(GOOD, extra=("SEEDS",))


def test_another_modules_scalar_of_the_same_value_does_not_hide_a_parameter():
    import sys
    import types

    other = types.ModuleType("has_a_seed")
    other.SEED, other.PRESET = 0, "smoke"       # the very same objects as the notebook's
    sys.modules["has_a_seed"] = other
    try:
        assert check_parameters(dict(GOOD))["SEED"] == 0
    finally:
        del sys.modules["has_a_seed"]


def test_a_committed_record_is_read_by_name_and_an_unknown_one_refused():
    """Session.record reads <records_dir>/<name>.json for the records the notebooks quote (a
    notebook's session finds figures/ from its own folder: ../figures), and refuses any other
    name by listing the known ones; a missing record names the command that writes it."""
    from pathlib import Path
    from types import SimpleNamespace

    from wsda_lib.teaching.session import RECORDS_DIR, Session

    notebooks = Path(__file__).resolve().parent.parent / "notebooks"
    this = SimpleNamespace(RECORDS=Session.RECORDS, records_dir=notebooks / RECORDS_DIR)
    ablation = Session.record(this, "ablation")
    assert ablation["preset"] == "default" and {r["control"] for r in ablation["controls"]} >= {
        "uda_colour", "no_target_term", "uda_self_training_no_labels"}
    with pytest.raises(ValueError, match=r"record must be one of \['ablation', 'mechanisms', "
                                         r"'results', 'study'\], got 'bench'"):
        Session.record(this, "bench")
    elsewhere = SimpleNamespace(RECORDS=Session.RECORDS, records_dir=notebooks)
    with pytest.raises(FileNotFoundError, match="`make ablation` writes it"):
        Session.record(elsewhere, "ablation")
