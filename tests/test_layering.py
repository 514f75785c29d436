"""The package's layers, read from the source: who may import whom, and no import cycle at module level."""
from __future__ import annotations

import ast
from pathlib import Path

import emo

ROOT = Path(emo.__file__).parent


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, node: ast.ImportFrom | ast.Import, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".")
        keep = len(parts) - node.level + (1 if is_package else 0)
        base = ".".join(parts[:keep] + ([node.module] if node.module else []))
    return [base] + [f"{base}.{a.name}" for a in node.names]


def _type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING" or (
        isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")


def _imports_of(path: Path, top_level_only: bool) -> set[str]:
    """The emo modules one file imports (all of them, or only those run when it is imported)."""
    module = _module(path)
    found: set[str] = set()

    def visit(nodes, top: bool) -> None:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                if top or not top_level_only:
                    found.update(n for n in _resolve(module, node, path.name == "__init__.py")
                                 if n == "emo" or n.startswith("emo."))
            elif isinstance(node, ast.If) and _type_checking(node):
                if not top_level_only:
                    visit(node.body, top)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(node.body, top and isinstance(node, ast.ClassDef))
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit(getattr(node, field, []), top)

    visit(ast.parse(path.read_text()).body, True)
    return found


def imports(top_level_only: bool) -> dict[str, set[str]]:
    """module -> the emo modules it imports (all of them, or only those run when it is imported)."""
    graph = {_module(path): _imports_of(path, top_level_only) for path in ROOT.rglob("*.py")}
    modules = set(graph)
    return {m: {i if i in modules else i.rsplit(".", 1)[0] for i in deps} & modules - {m} for m, deps in graph.items()}


def test_lower_layers_never_import_the_command_lines():
    for module, deps in imports(top_level_only=False).items():
        if module.startswith(("emo.serve", "emo.runtime", "emo.sampling", "emo.models")):
            assert not any(d.startswith("emo.cli") for d in deps), (module, sorted(deps))


def test_export_does_not_import_the_runtime():
    for module, deps in imports(top_level_only=False).items():
        if module.startswith("emo.export"):
            assert not any(d.startswith("emo.runtime") for d in deps), (module, sorted(deps))


def test_no_import_cycle_at_module_level():
    graph = imports(top_level_only=True)
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                walk(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            walk(m)
