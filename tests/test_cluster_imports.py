"""jetlib/cluster imports one way: spec and watch import no other cluster module, jobs only spec, launch the
three, and nothing they reach imports the package back. Imports inside functions count: a function-level
import is how a circle hides (the launcher and its watcher once imported each other that way)."""

import ast
import importlib.util
from pathlib import Path

import jetlib.cluster

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(jetlib.cluster.__file__).parent


def module_path(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    return Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None


def jetlib_imports(path: Path) -> set[str]:
    """Every jetlib module ``path`` imports, at any depth of its code (functions, classes, branches)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "jetlib":
            for alias in node.names:  # `from jetlib.cluster import spec` imports the module jetlib.cluster.spec
                sub = f"{node.module}.{alias.name}"
                out.add(sub if importlib.util.find_spec(node.module).submodule_search_locations is not None
                        and importlib.util.find_spec(sub) else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "jetlib"}
    return out


def test_the_cluster_modules_import_one_way():
    edges = {f"jetlib.cluster.{p.stem}": {m for m in jetlib_imports(p) if m.startswith("jetlib.cluster")}
             for p in sorted(PACKAGE.glob("*.py")) if p.stem != "__init__"}
    assert edges == {
        "jetlib.cluster.spec": set(),
        "jetlib.cluster.watch": set(),
        "jetlib.cluster.jobs": {"jetlib.cluster.spec"},
        "jetlib.cluster.launch": {"jetlib.cluster.spec", "jetlib.cluster.jobs", "jetlib.cluster.watch"},
    }


def test_nothing_the_cluster_modules_reach_imports_them_back():
    """The jetlib modules the package reaches, followed transitively through every import, never lead
    back into jetlib.cluster: the package sits at the end of its imports, so no module outside it can
    be half-initialised while a cluster module loads."""
    seen, todo = set(), [m for p in PACKAGE.glob("*.py") for m in jetlib_imports(p)
                         if not m.startswith("jetlib.cluster")]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = module_path(module)
        assert path is not None, module
        reached = jetlib_imports(path)
        assert not {m for m in reached if m == "jetlib.cluster" or m.startswith("jetlib.cluster.")}, module
        todo += sorted(reached - seen)
    assert {"jetlib.errors", "jetlib.records"} <= seen  # the walk did run through the package's own imports


def test_the_old_launcher_modules_are_gone_and_the_package_exports_the_launcher():
    assert not sorted((ROOT / "jetlib").glob("launch*.py"))  # the launcher lives in the package only
    assert jetlib.cluster.launch_pretrain.__module__ == "jetlib.cluster.launch"
    assert set(jetlib.cluster.__all__) <= set(dir(jetlib.cluster))
