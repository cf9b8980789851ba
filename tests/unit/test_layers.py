"""The module map's import rules (docs/internals.md), checked from the source: each package
imports only the layers below it, and no module imports itself back through others — lazy
imports inside functions included."""

import ast
import collections
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "src" / "carpool"
# package -> the carpool packages (and top-level modules) it may import
MAY_IMPORT = {
    "ha": {"events", "family", "untrusted"},
    "config": {"events", "family", "files", "untrusted"},
    "dataplane": {"config", "events", "family", "files"},
    "web": {"config", "events", "family", "terms", "tlscert", "untrusted"},
    "node": {
        "ha",
        "config",
        "dataplane",
        "web",
        "events",
        "family",
        "terms",
        "files",
        "untrusted",
    },
    "lab": {"ha", "config", "node", "web", "events", "family", "terms", "tlscert", "files"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for candidate in [target] + [f"{target}.{a.name}" for a in node.names]:
                if candidate in modules and candidate != name:
                    found.add(candidate)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules and a.name != name}
    return found


MODULES = _modules()
EDGES = {name: _imports(name, path, MODULES) for name, path in MODULES.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_each_package_imports_only_what_it_may():
    wrong = []
    for name, targets in EDGES.items():
        allowed = MAY_IMPORT.get(_layer(name))
        if allowed is None or name == f"carpool.{_layer(name)}":
            continue  # cli and the top level wire everything
        for target in targets:
            layer = _layer(target)
            if layer and layer != _layer(name) and layer not in allowed:
                wrong.append(f"{name} imports {target}")
    assert wrong == []


def test_no_import_cycles():
    state: dict[str, int] = collections.defaultdict(int)  # 0 new, 1 on the stack, 2 done
    stack: list[str] = []
    cycles = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(EDGES[module]):
            if state[target] == 1:
                cycles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif state[target] == 0:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(MODULES):
        if state[module] == 0:
            visit(module)
    assert cycles == []


def test_the_rules_see_the_imports():
    # the checks above read real edges: the daemon's web side and the doctor's view
    assert "carpool.web.unit" in EDGES["carpool.node.daemon"]
    assert "carpool.node.view" in EDGES["carpool.node.doctor"]


def test_the_shared_top_level_modules_import_nothing_of_carpool():
    for name in ("carpool.events", "carpool.terms", "carpool.files", "carpool.untrusted"):
        assert EDGES[name] == set(), name
