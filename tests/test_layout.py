"""The package's shape: the import graph has no cycle, so every module can be read (and imported) on its own.

Imports inside functions count too (a lazy import is still a dependency); those under ``if TYPE_CHECKING`` do not.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "redswitch"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in ROOT.rglob("*.py")}


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The redswitch modules ``path`` imports (``from pkg import mod`` names the submodule when it is one)."""
    found: set[str] = set()
    stack: list[ast.AST] = [ast.parse(path.read_text(encoding="utf-8"))]
    while stack:
        node = stack.pop()
        if _type_checking_only(node):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
        stack.extend(ast.iter_child_nodes(node))
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    edges = {name: imports_of(path, known) - {name} for name, path in found.items()}
    for name, targets in edges.items():  # a module may use its own package's names: that alone is no cycle
        targets -= {package for package in known if name.startswith(package + ".")}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_cycle() -> None:
    edges = graph()
    assert "redswitch.store.base" in edges["redswitch.store.atomic"]  # the graph sees the imports it judges
    assert "redswitch.store" in edges["redswitch.services.listener"]
    assert cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_pure_codec_imports_nothing_that_does_io() -> None:
    """protocol/ is bytes in, objects out: the client side and the simulator share it."""
    edges = graph()
    for name, targets in edges.items():
        if name.startswith("redswitch.protocol"):
            allowed = [target for target in targets if target.startswith("redswitch.protocol")]
            assert set(allowed) | {"redswitch.errors"} >= targets, (name, targets)


def test_setting_up_the_broker_imports_no_metrics() -> None:
    """The worker's broker puts prometheus_client in multiprocess mode: nothing it imports may import it first."""
    code = "import sys, redswitch.broker; print('prometheus_client' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"


def test_the_agent_s_processes_never_import_the_dashboard_s_web_stack() -> None:
    """The dashboard is an optional extra: the worker, the services and the command line load without it."""
    code = (
        "import sys, redswitch.actors, redswitch.cli, redswitch.cli.commands, redswitch.services.bridge, "
        "redswitch.services.listener, redswitch.services.relay, redswitch.services.scheduler, redswitch.client; "
        "print(sorted(m for m in ('starlette', 'uvicorn', 'redswitch.dashboard', 'playwright') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
    # and the check sees an import when there is one
    code = "import sys, redswitch.dashboard.app; print('starlette' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "True"
