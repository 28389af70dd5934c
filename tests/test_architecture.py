"""The library's shape, checked: layers import downwards only and without circles, functions
and notebook cells stay short, and nothing points at a file the repository does not have."""

import ast
import re
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
LIB = REPO / "wsda_lib"

# Lower layers never import upper ones (README, "How the code is organised").
LAYERS = [
    {"core"},         # config, seeds and devices, atomic writes, torch.distributed helpers
    {"data"},         # datasets: the embedded benchmark, real datasets, folders of files
    {"models"},       # DeepLab-v2
    {"method"},       # the paper: one function per equation
    {"training"},     # the loops, evaluation, resume, cached runs, pseudo-label files
    {"stages"},       # the series' stages: one record each, their checks and dispatcher
    {"records"},      # results.json and its verdicts, predictions for the official scripts
    {"teaching"},     # what the notebooks call: the session, plots, widgets, analysis
    {"experiments"},  # study, mechanisms, calibration, ablation, bench, gpu_check, reproduce
    {"cli", "__init__"},
]


def _layer(module: str) -> int:
    top = module.split(".")[0]
    return next(i for i, names in enumerate(LAYERS) if top in names)


def _modules():
    for path in sorted(LIB.rglob("*.py")):
        name = ".".join(path.relative_to(LIB).with_suffix("").parts)
        yield name.removesuffix(".__init__") if name != "__init__" else name, path


def _is_module(name: str) -> bool:
    path = LIB.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(name: str, path: Path) -> set[str]:
    """wsda_lib modules that `name` imports (relative imports resolved)."""
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            found |= {f"{target}.{a.name}" if not node.module else target
                      for a in node.names} if target else {a.name for a in node.names}
        elif isinstance(node, ast.Import):  # import wsda_lib.training.engine
            found |= {a.name.removeprefix("wsda_lib.") for a in node.names
                      if a.name.startswith("wsda_lib.")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wsda_lib"):
            target = node.module.removeprefix("wsda_lib").removeprefix(".")
            for a in node.names:  # `from wsda_lib.data import synthetic` imports a module
                sub = f"{target}.{a.name}".lstrip(".")
                found.add(sub if _is_module(sub) else target)
    return {m for m in found if m and m.split(".")[0] in set().union(*LAYERS)}


def test_every_module_has_a_layer():
    for name, _ in _modules():
        _layer(name)


def test_no_lower_layer_imports_an_upper_one():
    wrong = [f"{name} imports {dep}" for name, path in _modules()
             for dep in _imports(name, path) if _layer(dep) > _layer(name)]
    assert not wrong


def test_the_import_graph_has_no_circle():
    graph = {name: {d for d in _imports(name, path) if d != name} for name, path in _modules()}

    def known(m):  # "data.splits.Split" -> "data.splits"
        while m and m not in graph:
            m = m.rpartition(".")[0]
        return m

    graph = {k: {known(d) for d in v} - {"", k} for k, v in graph.items()}
    state = {}

    def visit(node, trail):
        if state.get(node) == "open":
            pytest.fail("import circle: " + " -> ".join(trail + [node]))
        if state.get(node) is None:
            state[node] = "open"
            for dep in graph.get(node, ()):
                visit(dep, trail + [node])
            state[node] = "done"

    for node in graph:
        visit(node, [])


def test_no_function_is_longer_than_60_lines():
    long = []
    for name, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    long.append(f"{name}.{node.name}: {n} lines")
    assert not long


def test_no_notebook_code_cell_is_longer_than_15_lines():
    long = [f"{p.name} cell {i}: {len(c.source.splitlines())} lines"
            for p in sorted((REPO / "notebooks").glob("*.ipynb"))
            for i, c in enumerate(nbformat.read(p, as_version=4).cells)
            if c.cell_type == "code" and len(c.source.splitlines()) > 15]
    assert not long


def test_nothing_points_at_files_outside_the_repository():
    pattern = re.compile(r"PAPER\.md|DESIGN\.md|STYLE\.md")
    places = [LIB, REPO / "notebooks", REPO / "docs", REPO / "figures", REPO / "tests"]
    files = [REPO / "README.md"] + [p for d in places for p in d.rglob("*")
                                    if p.suffix in (".py", ".md", ".ipynb", ".json")]
    hits = [str(p.relative_to(REPO)) for p in files
            if p != Path(__file__) and pattern.search(p.read_text())]
    assert not hits
    assert (REPO / "docs/method.md").is_file()


def test_the_readme_names_every_module():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## How the code is organised"):]
    missing = [path.relative_to(LIB).as_posix() for _, path in _modules()
               if path.name != "__init__.py" and path.relative_to(LIB).as_posix() not in section]
    assert not missing
