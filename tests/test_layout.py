"""The layout shows the architecture, and stays that way.

* no import cycle anywhere in ``src/rtkit`` (imports inside functions and under
  ``TYPE_CHECKING`` included);
* no module over 600 lines;
* a backend protocol module (``backends/base.py``, ``brokers/base.py``, ...)
  imports nothing concrete, and a backend never imports the public class of
  its component.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
ROOT = SRC / "rtkit"
MAX_LINES = 600
BACKEND_FOLDERS = {"backends", "brokers", "dedup", "cache"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(module: str, level: int, here: str) -> str:
    if level == 0:
        return module
    base = here.split(".")
    if not _is_package(here):
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _imports(name: str) -> Iterator[str]:
    tree = ast.parse(MODULES[name].read_text("utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node.module or "", node.level, name)
            for alias in node.names:
                child = f"{target}.{alias.name}"
                if child in MODULES:
                    yield child
                elif target in MODULES:
                    yield target


GRAPH: dict[str, set[str]] = {name: set(_imports(name)) - {name} for name in MODULES}


def _cycles() -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return found


def _closure(name: str) -> set[str]:
    seen: set[str] = set()
    todo = [name]
    while todo:
        for w in GRAPH[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def _component_classes() -> set[str]:
    """Names of the classes deriving from ``Component`` (directly or not), to a fixed point."""
    bases: dict[str, set[str]] = {}
    for name in MODULES:
        for node in ast.parse(MODULES[name].read_text("utf-8")).body:
            if isinstance(node, ast.ClassDef):
                found = {ast.unparse(b).split("[")[0].split(".")[-1] for b in node.bases}
                bases.setdefault(node.name, set()).update(found)
    known = {"Component"}
    while True:
        more = {cls for cls, parents in bases.items() if parents & known} - known
        if not more:
            return known
        known |= more


COMPONENT_CLASSES = _component_classes()


def _defines_component(name: str) -> bool:
    tree = ast.parse(MODULES[name].read_text("utf-8"))
    return any(
        isinstance(node, ast.ClassDef) and node.name in COMPONENT_CLASSES for node in tree.body
    )


def _in_backend_folder(name: str) -> bool:
    return not _is_package(name) and name.split(".")[-2] in BACKEND_FOLDERS


PROTOCOLS = sorted(n for n in MODULES if _in_backend_folder(n) and n.endswith(".base"))
BACKENDS = sorted(
    n
    for n in MODULES
    if _in_backend_folder(n) and not n.endswith(".base") and not n.split(".")[-1].startswith("_")
)
COMPONENT_MODULES = sorted(n for n in MODULES if _defines_component(n))


def test_no_import_cycles() -> None:
    assert _cycles() == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_over_600_lines(name: str) -> None:
    lines = len(MODULES[name].read_text("utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines"


def test_the_layout_has_protocols_backends_and_components() -> None:
    assert len(PROTOCOLS) >= 8
    assert len(BACKENDS) >= 12
    assert len(COMPONENT_MODULES) >= 10


@pytest.mark.parametrize("name", PROTOCOLS)
def test_a_backend_protocol_imports_nothing_concrete(name: str) -> None:
    concrete = _closure(name) & (set(BACKENDS) | set(COMPONENT_MODULES))
    assert not concrete, f"{name} imports {sorted(concrete)}"


@pytest.mark.parametrize("name", BACKENDS)
def test_a_backend_never_imports_its_component(name: str) -> None:
    components = _closure(name) & set(COMPONENT_MODULES)
    assert not components, f"{name} imports {sorted(components)}"
    others = _closure(name) & (set(BACKENDS) - {name})
    assert not others, f"{name} imports other backends {sorted(others)}"
