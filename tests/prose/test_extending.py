"""docs/extending.md stays true: every dotted name it puts in `code` resolves in wsda_lib,
every test file and module path it names exists, and the README links to it."""

import importlib
import re
from pathlib import Path

from wsda_lib.core.config import fields, preset

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs/extending.md"


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module("wsda_lib." + ".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def test_every_name_the_guide_gives_exists():
    text = GUIDE.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    spans = re.findall(r"`([^`]+)`", re.sub(r"```.*?```", " ", text, flags=re.S))
    dotted = [s for s in spans if re.fullmatch(r"[a-z_]+(\.[A-Za-z_]+)+", s)
              and not s.endswith((".py", ".md", ".toml"))]
    paths = [s for s in spans if s.endswith((".py", ".toml")) or s.endswith("/")]
    assert len(dotted) > 20 and len(paths) > 5
    config_fields = set(fields(preset("default")))  # "data.dataset" is a config field
    missing = [d for d in dotted if not (_resolves(d) or d in config_fields)]
    missing += [p for p in paths if not (REPO / p).exists()]
    assert not missing, missing
    for block in blocks:  # a record in a code block is one the registry accepts
        from wsda_lib.stages import registry

        name, record = eval("{" + block + "}", vars(registry)).popitem()  # noqa: S307
        assert isinstance(record, registry.Stage) and record.start_from in registry.STAGES, name


def test_the_readme_links_the_guide():
    assert "(docs/extending.md)" in (REPO / "README.md").read_text()
