"""core/config.py: presets, overrides by dotted name, and the run key a resolved config gives
(a field added with a default changes no cached run's key)."""


import pytest

from wsda_lib.core.config import key_config, override, preset, to_dict
from wsda_lib.training import runs


def _grown(cfg, section: str, value: float = 0.5):
    """`cfg` whose section `section` has one more field, dummy_field, at `value`; its
    default is 0.5, as if a newcomer had added it with that default."""
    import dataclasses

    kind = type(getattr(cfg, section))
    grown = dataclasses.make_dataclass(
        kind.__name__, [("dummy_field", "float", dataclasses.field(default=0.5))], bases=(kind,))
    values = {f.name: getattr(getattr(cfg, section), f.name)
              for f in dataclasses.fields(kind)}
    return dataclasses.replace(cfg, **{section: grown(**values, dummy_field=value)})


def test_config_key_is_stable_and_sensitive():
    a = to_dict(preset("smoke"))
    assert runs.config_key(a) == runs.config_key(to_dict(preset("smoke")))
    assert runs.config_key(a) != runs.config_key(to_dict(override(preset("smoke"),
                                                                  **{"train.lr": 0.5})))


def test_override_names_unknown_fields():
    with pytest.raises(KeyError, match="train.nope"):
        override(preset("smoke"), **{"train.nope": 1})
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


@pytest.mark.parametrize("section", ["data", "model", "train", "adapt"])
def test_a_field_added_with_a_default_changes_no_runs_key(section):
    """Adding a field with a default to any section leaves every stage's run key as it was;
    setting it away from its default changes the key (config.KEYED_ALWAYS)."""
    from wsda_lib.stages import STAGES, run_config

    cfg = preset("default")
    for name in STAGES:
        before = runs.config_key(run_config(name, cfg, seed=0))
        assert runs.config_key(run_config(name, _grown(cfg, section), seed=0)) == before
    moved = key_config(_grown(cfg, section, value=1.0))
    assert moved[section]["dummy_field"] == 1.0 and moved != key_config(cfg)


def test_a_section_added_with_defaults_changes_no_runs_key():
    import dataclasses

    from wsda_lib.core.config import Config

    @dataclasses.dataclass
    class Extra:
        strength: float = 0.0

    grown = dataclasses.make_dataclass(
        "Config", [("extra", "Extra", dataclasses.field(default_factory=Extra))], bases=(Config,))
    cfg = preset("default")
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(Config)}
    assert key_config(grown(**values)) == key_config(cfg)
    assert key_config(grown(**values, extra=Extra(1.0)))["extra"] == {"strength": 1.0}


def test_the_fields_keyed_at_any_value_are_fields():
    """KEYED_ALWAYS names real fields (a misspelt one would silently drop a field from keys
    at its default), and fields added after it, such as adapt.restyle, are keyed only away
    from their default."""
    from wsda_lib.core.config import KEYED_ALWAYS, fields

    cfg = preset("default")
    named = {f"{section}.{name}" for section, names in KEYED_ALWAYS.items() for name in names}
    assert named <= set(fields(cfg))
    assert "restyle" not in key_config(cfg)["adapt"]
    assert key_config(override(cfg, **{"adapt.restyle": "colour"}))["adapt"]["restyle"] == "colour"
