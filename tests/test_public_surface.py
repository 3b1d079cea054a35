"""Each package says what it offers in ``__all__``, and the rest of the code keeps to it.

- every name in a package's ``__all__`` exists (a module of it, or a name it defines);
- the gateway and the benchmarks import only the domain modules ``keys.__all__`` (and each
  domain area's ``__all__``) lists, only the service modules ``gateway.services.__all__``
  lists, and the simulator and the CLI only through their packages' names;
- every module of ``keys``, its areas and ``gateway.services`` is either listed or named in
  its package's docstring as internal, so a new module is a decision, not an accident.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOMAIN_AREAS = (
    "keys.access",
    "keys.approvals",
    "keys.generations",
    "keys.leaks",
    "keys.limits",
    "keys.records",
)
MODULE_PACKAGES = ("keys", *DOMAIN_AREAS, "gateway.services")
GATEWAY_PARTS = (
    "gateway.admin",
    "gateway.admission",
    "gateway.http",
    "gateway.integrations",
    "gateway.observability",
    "gateway.process",
    "gateway.tester",
    "gateway.upstream",
)
PACKAGES = (*MODULE_PACKAGES, *GATEWAY_PARTS, "gateway.simulator", "gateway.cli", "gateway.console")
# Code outside a package that must keep to its surface (tests may reach inside).
CONSUMERS = ("gateway", "bench")


def _submodules(package: ModuleType) -> list[str]:
    return [info.name for info in pkgutil.iter_modules(package.__path__)]


def _imports_outside(package: str) -> set[str]:
    """Every module path under ``package`` that code outside it imports, with the names."""
    named: set[str] = set()
    for consumer in CONSUMERS:
        for path in (ROOT / consumer).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            if module == package or module.startswith(package + "."):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module:
                    if node.module == package:
                        named.update(f"{package}.{alias.name}" for alias in node.names)
                    elif node.module.startswith(package + "."):
                        named.add(node.module)
                elif isinstance(node, ast.Import):
                    named.update(
                        alias.name for alias in node.names if alias.name.startswith(package + ".")
                    )
    return named


@pytest.mark.parametrize("name", PACKAGES)
def test_every_listed_name_exists(name: str) -> None:
    package = importlib.import_module(name)
    listed = package.__all__
    assert len(listed) == len(set(listed)), "listed twice"
    submodules = set(_submodules(package))
    for item in listed:
        assert item in submodules or hasattr(package, item), f"{name}.{item}"


@pytest.mark.parametrize("name", MODULE_PACKAGES)
def test_module_packages_list_or_name_every_module(name: str) -> None:
    package = importlib.import_module(name)
    doc = package.__doc__ or ""
    unaccounted = [
        module
        for module in _submodules(package)
        if module not in package.__all__ and module != "migrations" and f"``{module}``" not in doc
    ]
    assert unaccounted == []


@pytest.mark.parametrize("name", MODULE_PACKAGES)
def test_the_rest_imports_only_listed_modules(name: str) -> None:
    package = importlib.import_module(name)
    allowed = {f"{name}.{module}" for module in package.__all__}
    used = {path for path in _imports_outside(name) if path.count(".") == name.count(".") + 1}
    assert sorted(used - allowed) == []


@pytest.mark.parametrize("name", ["gateway.simulator", "gateway.cli"])
def test_the_rest_imports_only_the_packages_names(name: str) -> None:
    package = importlib.import_module(name)
    allowed = {f"{name}.{item}" for item in package.__all__}
    used = _imports_outside(name)
    assert sorted(used - allowed) == []
