"""The package's import graph: no cycles between modules, no lower layer importing a higher one.

Reads the import statements of every module with `ast` (relative imports resolved, imports
inside functions included); nothing is imported. Layers, lowest first (README "Layout"):

    config, core, errors  <  data, models  <  runtime, pipeline, train  <  ros
        <  nodes, demo, launch, cli (and the other top-level modules)

A module may import its own layer and those below it.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = "codealign_ros"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

#: rank of each first-level name under the package; top-level modules not named are "top".
LAYERS: dict[str, int] = {
    "errors": 0, "config": 0, "core": 0,
    "data": 1, "models": 1,
    "runtime": 2, "pipeline": 2, "train": 2,
    "ros": 3,
}
TOP = 4  # nodes, demo, launch, cli, keys_cli, processes, __main__


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Package modules `name` imports (the longest known prefix of each target)."""
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # "from pkg import mod" imports the module pkg.mod; "from mod import name" mod.
            subs = {f"{mod}.{a.name}" for a in node.names} & known
            targets.update(subs or {mod})
            if len(subs) < len(node.names):
                targets.add(mod)
    found = set()
    for t in targets:
        while t and t not in known:
            t = t.rpartition(".")[0]
        if t and t != name and t.startswith(PACKAGE):
            found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) - {PACKAGE} for name, path in mods.items()}


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], TOP) if len(parts) > 1 else TOP


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def _package_inits(g: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph without edges from a package to its own submodules (re-exports)."""
    return {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in g.items()}


def test_graph_sees_known_edges() -> None:
    g = graph()
    assert "codealign_ros.config.groups" in g["codealign_ros.data.assignment"]
    assert "codealign_ros.config" in g["codealign_ros.config.profiles"]
    assert len(g) > 50


def test_no_import_cycles() -> None:
    cycles = _cycles(_package_inits(graph()))
    assert not cycles, f"import cycles: {cycles}"


def test_no_upward_imports() -> None:
    bad = sorted(f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
                 for m, ts in graph().items() for t in ts if layer(t) > layer(m))
    assert not bad, "lower layer imports a higher one:\n" + "\n".join(bad)


#: "small modules (< ~400 lines)".
MAX_LINES = 420


def test_no_module_over_the_size_limit() -> None:
    big = {m: n for m, p in _modules().items()
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_cycle_detector_can_fail() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch blocked")
sys.meta_path.insert(0, Block())
from codealign_ros.config import groups, modalities, profiles
from codealign_ros.config.grid import BevGrid
from codealign_ros.core import grid
p = profiles.load_profile("mini")
assert isinstance(p.grid, BevGrid) and p.grid == profiles.load_profile("mini").grid
owner = groups.modality_owner(groups.groups())
assert all(groups.group_of(m) == g for m, g in owner.items())
for m in owner:
    modalities.modality_spec(m)
assert "torch" not in sys.modules
print("ok")
"""


def test_config_layer_is_torch_free() -> None:
    run = subprocess.run([sys.executable, "-c", BLOCK_TORCH], capture_output=True, text=True,
                         timeout=60, cwd=ROOT.parent)
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr
