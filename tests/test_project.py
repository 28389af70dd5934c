"""The project's own files: packaging agrees with itself, notebooks are committed clean."""

import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_PATHS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_environment_yml_installs_pyproject():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_section == ["-e .[dev]"]
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    version = python.split("=")[1]
    minimum = re.search(r">=\s*([\d.]+)", project["requires-python"]).group(1)
    assert tuple(map(int, version.split("."))) >= tuple(map(int, minimum.split(".")))
    # every other conda entry is tooling, not a second list of Python packages
    assert {d for d in env["dependencies"] if isinstance(d, str)} == {python, "pip"}


# The optional imports: the extra that installs each, and the distribution it names.
OPTIONAL_IMPORTS = {"cv2": ("paper", "opencv-python-headless"),
                    "cityscapesscripts": ("official", "cityscapesscripts"),
                    "tensorboard": ("tensorboard", "tensorboard")}


def _distribution(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_package_the_library_imports_is_declared():
    """Each third-party module imported anywhere in wsda_lib (inside functions too) belongs to
    a distribution in pyproject's dependencies, or, for an optional import (OPTIONAL_IMPORTS),
    to the extra that names it; nothing the library needs at run time hides under `dev`."""
    import ast
    from importlib.metadata import packages_distributions

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = {_distribution(r) for r in project["dependencies"]}
    extras = {name: {_distribution(r) for r in reqs}
              for name, reqs in project["optional-dependencies"].items()}
    imported = set()
    for path in (REPO / "wsda_lib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"wsda_lib"}
    dists = packages_distributions()
    undeclared = []
    for name in sorted(third_party):
        if name in OPTIONAL_IMPORTS:
            extra, distribution = OPTIONAL_IMPORTS[name]
            assert distribution in extras[extra] and distribution not in runtime, name
            continue
        found = {d.lower().replace("_", "-") for d in dists.get(name, [])}
        if not found & runtime:
            undeclared.append(f"{name} (from {sorted(found) or 'nothing installed'})")
    assert not undeclared
    assert "ipython" in runtime and "nbclient" in runtime and "nbformat" in runtime


def test_makefile_has_the_documented_targets():
    makefile = (REPO / "Makefile").read_text()
    for target in ("reproduce", "test", "smoke", "lab", "lint", "bench"):
        assert re.search(rf"^{target}:", makefile, re.M), target
    assert "make test" in (REPO / ".ci/run").read_text()


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda p: p.name)
def test_notebooks_are_clean_and_parameterised(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for name in ("PRESET", "SEED", "DEVICE", "RUN_DIR", "INTERACTIVE"):
        assert re.search(rf"^{name} = ", tagged[0].source, re.M), name
    assert nb.metadata.kernelspec.name == "python3"
