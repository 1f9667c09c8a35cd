"""Dependencies point one way (docs/ARCHITECTURE.md), checked over every import statement
in the source, TYPE_CHECKING blocks and function-local imports included."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("server", "sim", "proto", "client_demo")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports (first-party only), wherever the import sits."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def graph() -> dict[str, set[str]]:
    """module -> the first-party modules it imports."""
    modules = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {name: {t for t in imports_of(path) if t in modules and t != name}
            for name, path in modules.items()}


def test_the_server_package_has_no_import_cycle():
    server = {m: {t for t in deps if t.startswith("server")}
              for m, deps in graph().items() if m.startswith("server")}
    try:
        list(TopologicalSorter(server).static_order())
    except CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


@pytest.mark.parametrize("low", ["sim", "proto"])
def test_sim_and_proto_never_import_the_server_or_the_clients(low: str):
    bad = [(a, b) for a, deps in graph().items() if a.startswith(low) for b in deps
           if b.split(".")[0] in ("server", "client_demo")]
    assert bad == []


def test_admin_paramswatch_and_recording_know_only_the_narrow_interface():
    g = graph()
    for module in ("server.admin", "server.paramswatch", "server.recording"):
        assert "server.gateway" not in g[module], module


def test_no_private_name_is_imported_across_modules():
    offenders = []
    for pkg in ("server", "sim", "proto"):
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and \
                        node.module.split(".")[0] in PACKAGES:
                    offenders += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                                  if a.name.startswith("_") and a.name != "__version__"]
    assert offenders == []
