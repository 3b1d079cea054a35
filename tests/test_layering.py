"""The layers hold: what each part of the code may import, checked by importing it.

Each check imports the modules in a fresh interpreter and lists everything that got loaded,
so an import buried three modules deep counts as much as one at the top of the file.

- ``keys/`` (the domain) never loads Flask or werkzeug, nor anything of ``gateway``;
- ``gateway/services/`` (the use cases) never loads Flask or werkzeug;
- the CLI's commands load services, never the app factory or a blueprint (only ``serve``
  and ``demo`` build the app, when they run);
- no two modules import each other, directly or around a loop, counting imports made for
  type checking only: a loop means one of them is in the wrong place;
- each part of ``gateway/`` (a sub-package, or a module at its top) imports only the parts
  ``MAY_IMPORT`` gives it, and the parts load one another without a loop.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import gateway.services
import keys

ROOT = Path(__file__).resolve().parent.parent

IMPORT_AND_LIST = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print("\\n".join(sys.modules))
"""

WEB_FRAMEWORK = ("flask", "werkzeug")
# The modules that make up the HTTP edge's app: the factory and every blueprint module.
APP_AND_BLUEPRINTS = (
    "gateway.app",
    "gateway.admin.api",
    "gateway.admin.approvals",
    "gateway.console",
    "gateway.observability.health",
    "gateway.tester.me",
    "gateway.integrations.secret_scanning",
    "gateway.tester.shares",
    "gateway.admin.usage",
    "gateway.tester.videos",
)


# The parts of the gateway, and what each may import (``keys`` is the domain). The planes
# (tester, admin, integrations, observability, console) never import one another, except that
# the console renders the tester's own views; the HTTP plumbing imports no plane; the
# services and the backend import nothing of Flask's edge.
_FOUNDATION = {"keys", "gateway.settings", "gateway.context", "gateway.state"}
_PLANE = _FOUNDATION | {
    "gateway.http",
    "gateway.presenters",
    "gateway.services",
    "gateway.upstream",
}
MAY_IMPORT: dict[str, set[str]] = {
    "gateway.settings": {"keys"},
    "gateway.presenters": {"keys"},
    "gateway.simulator": set(),
    "gateway.admission": {"keys"},
    # Type hints only: what admission and the console hand out for the request's lifetime.
    "gateway.context": {"keys", "gateway.admission", "gateway.console"},
    "gateway.upstream": {"keys", "gateway.settings", "gateway.context"},
    "gateway.state": {"keys", "gateway.settings", "gateway.admission", "gateway.upstream"},
    "gateway.services": _FOUNDATION | {"gateway.upstream", "gateway.presenters"},
    "gateway.http": _FOUNDATION | {"gateway.services", "gateway.admission", "gateway.upstream"},
    "gateway.tester": _PLANE,
    "gateway.admin": _PLANE,
    "gateway.integrations": _PLANE,
    "gateway.observability": _PLANE,
    "gateway.console": _PLANE | {"gateway.tester"},
    "gateway.app": _PLANE
    | {
        "gateway",
        "gateway.admission",
        "gateway.admin",
        "gateway.console",
        "gateway.fast_refusal",
        "gateway.integrations",
        "gateway.observability",
        "gateway.tester",
    },
    # The flood's refusals in front of Flask: admission's answer, counted and logged as the
    # tester plane and the observability would.
    "gateway.fast_refusal": _PLANE
    | {"gateway.admission", "gateway.observability", "gateway.tester"},
    "gateway.process": {"keys", "gateway.http", "gateway.observability"},
    # For testers' machines: signs requests with a proof key (no part of the gateway's edge).
    "gateway.client": {"keys"},
    "gateway.cli": _PLANE
    | {
        "gateway.app",
        "gateway.client",
        "gateway.observability",
        "gateway.process",
        "gateway.simulator",
    },
    "gateway.wsgi": {"keys", "gateway.app", "gateway.observability"},
    "gateway.gunicorn_conf": {"gateway.process"},
    "gateway.__main__": {"gateway.cli"},
}


def _modules_of(package: object) -> list[str]:
    path = package.__path__  # type: ignore[attr-defined]
    prefix = package.__name__ + "."  # type: ignore[attr-defined]
    return [package.__name__, *(info.name for info in pkgutil.walk_packages(path, prefix))]  # type: ignore[attr-defined]


def _loaded_after_importing(modules: list[str]) -> set[str]:
    listed = subprocess.run(
        [sys.executable, "-c", IMPORT_AND_LIST, *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    loaded = set(listed)
    assert set(modules) <= loaded
    return loaded


def _within(loaded: set[str], roots: tuple[str, ...]) -> list[str]:
    return sorted(name for name in loaded if name.split(".", 1)[0] in roots or name in roots)


def test_the_domain_loads_no_web_framework_and_nothing_of_the_gateway() -> None:
    modules = [name for name in _modules_of(keys) if not name.startswith("keys.migrations")]
    loaded = _loaded_after_importing(modules)
    assert _within(loaded, WEB_FRAMEWORK) == []
    assert _within(loaded, ("gateway",)) == []


def test_the_services_load_no_web_framework() -> None:
    modules = _modules_of(gateway.services)
    assert {"gateway.services.admission", "gateway.services.generations"} <= set(modules)
    loaded = _loaded_after_importing(modules)
    assert _within(loaded, WEB_FRAMEWORK) == []
    assert [name for name in APP_AND_BLUEPRINTS if name in loaded] == []


def test_the_cli_commands_load_services_not_the_app() -> None:
    code = "from gateway.cli.base import load_commands\nload_commands()\n" + IMPORT_AND_LIST
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code, "gateway.cli.admin"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    )
    assert "gateway.cli.admin" in loaded
    assert [name for name in APP_AND_BLUEPRINTS if name in loaded] == []


def _runtime_imports(path: Path) -> set[str]:
    """The project modules ``path`` imports when it runs (``TYPE_CHECKING`` blocks left out)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    named: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            named.add(node.module)
        elif isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
    return named


def _part_of(module: str) -> str:
    """The part of the gateway a module belongs to: its sub-package, or itself at the top."""
    if module.split(".", 1)[0] == "keys":
        return "keys"
    return ".".join(module.split(".")[:2])


def _gateway_modules() -> dict[str, Path]:
    modules = {}
    for path in (ROOT / "gateway").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        if name != "gateway":
            modules[name] = path
    return modules


def test_every_part_of_the_gateway_has_import_rules() -> None:
    parts = {_part_of(name) for name in _gateway_modules()}
    assert sorted(parts - set(MAY_IMPORT)) == []
    assert sorted(set(MAY_IMPORT) - parts) == []


def test_each_part_imports_only_what_its_rules_allow() -> None:
    broken = []
    for name, path in sorted(_gateway_modules().items()):
        part = _part_of(name)
        for imported in _project_imports(path):
            if imported.split(".", 1)[0] not in ("gateway", "keys"):
                continue
            target = "gateway" if imported == "gateway" else _part_of(imported)
            if target != part and target not in MAY_IMPORT[part]:
                broken.append(f"{name} imports {imported} ({part} may not import {target})")
    assert broken == []


def test_the_parts_load_one_another_without_a_loop() -> None:
    graph: dict[str, set[str]] = {part: set() for part in MAY_IMPORT}
    for name, path in _gateway_modules().items():
        part = _part_of(name)
        for imported in _runtime_imports(path):
            if imported.split(".", 1)[0] in ("gateway", "keys") and imported != "gateway":
                target = _part_of(imported)
                if target != part:
                    graph[part].add(target)
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        raise AssertionError(f"parts loading in a loop: {' -> '.join(exc.args[1])}") from None


def _project_imports(path: Path) -> set[str]:
    """Every project module ``path`` names in an import, TYPE_CHECKING blocks included."""
    named: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            named.add(node.module)
            named.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
    return named


def test_no_import_cycles() -> None:
    modules: dict[str, Path] = {}
    for package in ("keys", "gateway"):
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
                modules[name.removesuffix(".__init__")] = path
    graph = {
        name: {other for other in _project_imports(path) if other in modules and other != name}
        for name, path in modules.items()
    }
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None
