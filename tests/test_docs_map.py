"""docs/map.md stays true: every name and path it gives exists, its layer table matches the imports,
and its extension snippets register, build and unregister against the real registries.

A rename, a moved module or a changed signature makes one of these fail, naming the map's token."""

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest
import torch

from jetlib import methods, models, tasks

ROOT = Path(__file__).resolve().parents[1]
MAP = (ROOT / "docs" / "map.md").read_text()
TOKENS = re.findall(r"`([^`\n]+)`", MAP)
DOTTED = sorted({t for t in TOKENS if re.fullmatch(r"jetlib(\.\w+)+", t)})
PATHS = sorted({t for t in TOKENS if re.fullmatch(r"[\w.-]+(/[\w.-]+)*/?", t) and ("/" in t or t.endswith(".md"))
                and not t.startswith("jetlib.")})
NEW_FILES = set(re.findall(r"new file `([^`]+)`", MAP))
SNIPPETS = re.findall(r"```python\n(.*?)```", MAP, re.S)
# the one import against the table's order that the map states (the report's "what is missing" reads the plan)
UPWARD = {("jetlib.report.missing", "jetlib.study")}


def resolve(dotted: str):
    """The object a dotted name names: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_the_map_names_things():
    assert len(DOTTED) >= 40 and len(PATHS) >= 30 and len(SNIPPETS) == 3 and len(NEW_FILES) == 4


@pytest.mark.parametrize("dotted", DOTTED)
def test_every_dotted_name_exists(dotted):
    resolve(dotted)  # AttributeError / ModuleNotFoundError names the stale token


@pytest.mark.parametrize("path", PATHS)
def test_every_path_exists_or_is_the_new_file_to_add(path):
    if path in NEW_FILES:  # "a new file X": not there yet, in a folder that is
        assert not (ROOT / path).exists() and (ROOT / path).parent.is_dir(), path
    else:
        assert (ROOT / path).exists() or (ROOT / "docs" / path).exists(), path


def test_links_resolve():
    for target in re.findall(r"\]\(([^)#]+)\)", MAP):
        assert (ROOT / "docs" / target).exists(), target


def layer_rows() -> list[list[str]]:
    """The layer table's paths, one list per row, top row first."""
    table = MAP[MAP.index("## The layers"):MAP.index("## The seams")]
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| ") and "`" in line]
    return [re.findall(r"`([^`]+)`", cells[2]) for cells in rows]


def module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """jetlib modules imported at module level (not inside functions or ``if TYPE_CHECKING``)."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "jetlib":
            if node.module == "jetlib":  # from jetlib import dist: the module jetlib.dist, else the package
                out |= {f"jetlib.{a.name}" if importlib.util.find_spec(f"jetlib.{a.name}") else "jetlib"
                        for a in node.names}
            else:
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "jetlib"}
    return out


def test_every_module_is_in_one_layer_and_imports_only_from_its_own_or_above():
    rows = [[p for p in row if p.startswith("jetlib/")] for row in layer_rows()]

    def row_of(module: str) -> int:
        rel = module.replace(".", "/")
        hits = [(len(p), i) for i, row in enumerate(rows) for p in row
                if rel + ".py" == p or rel + "/__init__.py" == p or (p.endswith("/") and (rel + "/").startswith(p))]
        assert hits, f"{module} is in no row of the map's layer table"
        return max(hits)[1]

    upward = set()
    for path in sorted((ROOT / "jetlib").rglob("*.py")):
        module = module_of(path)
        for dep in top_level_imports(path):
            if row_of(dep) > row_of(module):
                upward.add((module, dep))
    assert upward == UPWARD


def test_the_registration_lines_have_the_shape_the_map_gives():
    """The map says: networks, tasks and methods register one way, a ``"name": "jetlib.<package>.name"``
    line in their package's ``BUILTIN`` table; every built-in is listed so and its module registers
    that name (imported on first use: the names are known before it is)."""
    for package, registry, table in (("models", models.ARCHS, models.BUILTIN), ("tasks", tasks.TASKS, tasks.BUILTIN),
                                     ("methods", methods.METHODS, methods.BUILTIN)):
        assert table and list(registry)[:len(table)] == list(table), package
        for name, module in table.items():
            assert module.startswith(f"jetlib.{package}.") and importlib.util.find_spec(module), (package, name)
            source = Path(importlib.util.find_spec(module).origin).read_text()
            assert re.search(rf"@register_\w+\(\s*\"{name}\"", source), (package, name)
        assert f"`jetlib.{package}.BUILTIN`" in MAP, package
    assert '`"mynet": "jetlib.models.mynet"`' in MAP and '`"pt_high": "jetlib.tasks.mytask"`' in MAP
    assert '`"mine": "jetlib.methods.mine"`' in MAP
    for init in ("models", "tasks"):  # no import for the registration's sake: the table is the one way
        assert "noqa: E402" not in (ROOT / "jetlib" / init / "__init__.py").read_text()
        assert "isort: split" not in (ROOT / "jetlib" / init / "__init__.py").read_text()


@pytest.fixture
def snippets():
    """The map's three snippets, executed: each registers its toy; taken away again after the test."""
    ns: dict = {}
    try:
        for code in SNIPPETS:
            exec(compile(code, "docs/map.md", "exec"), ns)
        yield ns
    finally:
        models.unregister_model("mynet")
        tasks.unregister_task("pt_high")
        methods.unregister_method("mine")


def test_the_snippets_build_against_the_real_registries(snippets):
    net = models.create("mynet", in_channels=8, width=6)
    assert isinstance(net, snippets["MyNet"]) and net.num_features == 6 and net.arch == "mynet"
    assert net.config() == {"in_channels": 8, "width": 6}
    net.reset_head("pt_high", hidden=4)  # the toy task's head (a classifier's) on the toy network's features
    assert net.task == "pt_high" and net.forward_head(torch.zeros(2, 6)).shape == (2, 2)

    task = tasks.get("pt_high")
    batch = type("B", (), {"pt": torch.tensor([10.0, 30.0, 20.0])})()
    assert task.truth(batch, {"median": 20.0}).tolist() == [0, 1, 0]
    assert "pt_high" in tasks.TASKS and "pt_high" not in models.VGG.tasks

    method = methods.create("mine", models.create("resnet", **models.resnet.VARIANTS["tiny"].to_dict()),
                            {"proj_dim": "64"})
    assert isinstance(method, snippets["Mine"]) and method.params.proj_dim == 64 and "mine" in methods.METHODS
