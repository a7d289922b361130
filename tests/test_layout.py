"""The architecture as a test: the package's imports point one way, there are no cycles, the layout stays
small (at most 10 top-level modules besides the sub-packages, none over 400 lines unless it says why), and the facts
of a file are declared once (:mod:`hashdup.io.facts`).

Layers, from the top (the command line) down: a module may import its own layer's modules of the same sub-package,
or any lower layer; siblings of one layer (the dedup wing and the index path, say) do not import each other. Imports
under ``if TYPE_CHECKING:`` are only for annotations and are left out; imports inside functions count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hashdup"
#: (layer, module prefixes), top first. "hashdup" alone is the public API of hashdup/__init__.py.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("entry point", ("hashdup.__main__",)),
    ("command line and public API", ("hashdup.cli", "hashdup")),
    ("use cases", ("hashdup.pipeline",)),
    ("dedup wing, index path, evaluation", ("hashdup.dedup", "hashdup.indexing", "hashdup.evaluation")),
    ("opened index, extraction, supervision", ("hashdup.opened", "hashdup.extract", "hashdup.supervision")),
    ("descriptors, encoders, search", ("hashdup.descriptors", "hashdup.encoders", "hashdup.index")),
    ("files", ("hashdup.io",)),
    ("foundations", ("hashdup.bits", "hashdup.errors")),
]
MAX_TOP_LEVEL_MODULES = 10
MAX_LINES = 400
#: The first lines of a module that may be longer say so with this phrase (numba's disk cache keys on the file).
LONG_OK = "must stay whole"
#: The facts of a file, declared in FACTS_MODULE only: every other record holds them as one field (``facts``, a
#: step also ``keeper_facts``, the bytes read from a file ``stat``).
FACT_FIELDS = {"size", "mtime_ns", "blake2b", "width", "height", "format"}
FACTS_MODULE = "hashdup.io.facts"
#: Dataclasses that declare two or more of FACT_FIELDS all the same, and why.
FACTS_ALLOWED = {
    "hashdup.io.images.DecodedImage": "the decoder's result: the width, height and format of a decoded picture, "
                                      "which are a file's facts only once its stat and content hash are known",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The hashdup modules ``name`` imports at run time (``from hashdup import bits`` is hashdup.bits;
    ``from hashdup import __version__`` is the package's version, defined before anything is imported, and left
    out)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "hashdup")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] == "hashdup":
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    if sub in known:
                        found.add(sub)
                    elif not (base == "hashdup" and a.name == "__version__"):
                        found.add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(name)
    return found


def layer_of(module: str) -> tuple[int, str]:
    """``(layer number, prefix)`` of the longest prefix that names ``module``."""
    best = None
    for n, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > len(best[1])):
                best = (n, p)
    if best is None:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")
    return best


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def test_every_import_points_down_or_stays_home(graph):
    wrong = []
    for a, targets in graph.items():
        la, pa = layer_of(a)
        for b in sorted(targets):
            lb, pb = layer_of(b)
            if lb < la or (lb == la and pa != pb):
                wrong.append(f"{a} ({LAYERS[la][0]}) imports {b} ({LAYERS[lb][0]})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles(graph):
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checks_can_fail():
    cyclic = {"hashdup.pipeline": {"hashdup.dedup.groups"}, "hashdup.dedup.groups": {"hashdup.pipeline"}}
    assert layer_of("hashdup.dedup.groups")[0] > layer_of("hashdup.pipeline")[0]  # the second arrow points up
    with pytest.raises(AssertionError):
        test_no_import_cycles(cyclic)
    with pytest.raises(AssertionError):
        test_every_import_points_down_or_stays_home(cyclic)
    assert imports("hashdup.x", _write_probe(), {"hashdup.bits", "hashdup.x"}) == {"hashdup.bits", "hashdup.pipeline"}


def _write_probe() -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "x.py"
    path.write_text("from typing import TYPE_CHECKING\nfrom hashdup import bits, __version__\n"
                    "if TYPE_CHECKING:\n    from hashdup.cli import cli\n"
                    "def f():\n    from hashdup.pipeline import query\n")
    return path


def test_the_top_level_is_small():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_no_module_over_400_lines_unless_it_says_why():
    long = []
    for name, path in _modules().items():
        lines = path.read_text().splitlines()
        if len(lines) > MAX_LINES and LONG_OK not in "\n".join(lines[:5]):
            long.append(f"{name}: {len(lines)} lines")
    assert not long, "\n".join(long)


def _is_dataclass(node: ast.ClassDef) -> bool:
    for d in node.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        if (isinstance(target, ast.Name) and target.id == "dataclass") or (
                isinstance(target, ast.Attribute) and target.attr == "dataclass"):
            return True
    return False


def declared_facts(modules: dict[str, Path]) -> dict[str, set[str]]:
    """``{module.Class: the names of FACT_FIELDS its body declares}`` for every dataclass of ``modules`` that declares
    any (inherited fields and a field holding a facts record do not count)."""
    found = {}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and _is_dataclass(node):
                own = {a.target.id for a in node.body
                       if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name)}
                if own & FACT_FIELDS:
                    found[f"{name}.{node.name}"] = own & FACT_FIELDS
    return found


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    return _modules()


def test_the_facts_of_a_file_are_declared_once(modules):
    found = declared_facts(modules)
    again = [f"{k} declares {', '.join(sorted(v))}: hold a {FACTS_MODULE} record instead"
             for k, v in sorted(found.items())
             if len(v) >= 2 and not k.startswith(FACTS_MODULE + ".") and k not in FACTS_ALLOWED]
    assert not again, "\n".join(again)
    in_facts = [v for k, v in found.items() if k.startswith(FACTS_MODULE + ".")]
    assert sorted(n for v in in_facts for n in v) == sorted(FACT_FIELDS), in_facts  # each of them once, there
    assert set(FACTS_ALLOWED) <= set(found), "an allowance that is no longer needed: remove it"


def test_the_facts_check_can_fail():
    import tempfile

    path = Path(tempfile.mkdtemp()) / "probe.py"
    path.write_text("from dataclasses import dataclass\nimport dataclasses\n"
                    "@dataclass(frozen=True)\nclass Row:\n    id: int\n    size: int\n    mtime_ns: int\n"
                    "@dataclasses.dataclass\nclass Pic:\n    width: int\n    height: int\n"
                    "@dataclass\nclass One:\n    size: int\n    facts: object\n"
                    "class Plain:\n    width: int\n    height: int\n")
    assert declared_facts({"hashdup.probe": path}) == {"hashdup.probe.Row": {"size", "mtime_ns"},
                                                       "hashdup.probe.Pic": {"width", "height"},
                                                       "hashdup.probe.One": {"size"}}
    with pytest.raises(AssertionError, match=r"hashdup\.probe\.Row declares mtime_ns, size: hold a"):
        test_the_facts_of_a_file_are_declared_once({**_modules(), "hashdup.probe": path})
    with pytest.raises(AssertionError, match="no longer needed"):  # DecodedImage's allowance, were it not there
        test_the_facts_of_a_file_are_declared_once({k: v for k, v in _modules().items() if k != "hashdup.io.images"})
