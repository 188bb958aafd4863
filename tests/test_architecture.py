"""The shape of the package (docs/ARCHITECTURE.md): no import cycles, small modules, an engine that never reaches
into a method, name lists that come from the registries, and citations that can be followed from a checkout."""

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = SRC.parent
PACKAGE = SRC / "kdlab"
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imported(module: str, path: Path) -> set[str]:
    """The kdlab modules ``module`` imports anywhere in its body (inside functions too), resolved to the longest
    known module name; a module importing its own package (a registry loading its members) is not counted."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name not in MODULES and "." in name:
                name = name.rpartition(".")[0]
            if name in MODULES and name != module and not module.startswith(name + "."):
                targets.add(name)
    return targets


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index, low, on_stack, stack, result, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    result.append(sorted(component))
    return result


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = {module: _imported(module, path) for module, path in MODULES.items()}
    assert sum(len(targets) for targets in graph.values()) > 100  # the walk sees the imports
    assert _cycles(graph) == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_over_the_line_limit(module):
    assert len(MODULES[module].read_text().splitlines()) <= MAX_LINES


def test_the_engine_never_reaches_into_a_method():
    for path in (PACKAGE / "train").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"getattr\(\s*(self\.)?method\b", text), path
        assert "method.params.teacher" not in text, path
        assert "method.teacher" not in text and "method.cache" not in text, path


def test_methods_never_read_run_directories():
    """A method gets its teacher from ``MethodContext.load_teacher``: no method module imports the teacher, the
    engine or the recipe loader (only the teacher's recipe schema, ``kdlab.teacher.spec``, which reads no files
    beyond a class-name list and imports nothing of kdlab but its errors and shared field types)."""
    for module, path in MODULES.items():
        if module.startswith("kdlab.methods"):
            reached = {t for t in _imported(module, path) if t.startswith(("kdlab.teacher", "kdlab.train", "kdlab.config"))}
            assert reached <= {"kdlab.teacher.spec"}, module
    assert {t for t in _imported("kdlab.teacher.spec", MODULES["kdlab.teacher.spec"]) if t.startswith("kdlab")} \
        <= {"kdlab.errors", "kdlab.fields"}


def test_every_cited_doc_is_in_the_repository():
    cited = set()
    for path in MODULES.values():
        text = path.read_text()
        assert "METHODS.md" not in text, path
        cited |= set(re.findall(r"docs/[\w/.-]+\.md", text))
    assert cited, "the sources cite docs/methods/"
    missing = sorted(c for c in cited if not (ROOT / c).is_file())
    assert missing == []


def _subcommands(parser) -> dict:
    return {name: sub for action in parser._subparsers._group_actions for name, sub in action.choices.items()}


def test_name_lists_come_from_the_registries():
    from kdlab import methods
    from kdlab.cli import build_parser
    from kdlab.data import SOURCES

    commands = _subcommands(build_parser())
    flat = lambda parser: " ".join(parser.format_help().split())  # noqa: E731 (argparse wraps lines)
    assert "bdkd" in methods.names(heads=True) and "kd" in methods.names(teacher=True)
    assert all(name in flat(commands["export"]) for name in methods.names(heads=True))
    assert all(name in flat(commands["cache-teacher"]) for name in methods.names(teacher=True))
    assert all(source in flat(_subcommands(commands["data"])["prepare"]) for source in SOURCES)
