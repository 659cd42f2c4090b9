"""No component imports another's internals: each service may use the shared kit
(saga_kit), the Midtrans client and the generated gRPC code, nothing of the operator
or of another service."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"
SHARED = {"saga_kit", "midtrans", "checkout"}  # the kit, the client, generated code
COMPONENTS = {p.name for p in SERVICES.iterdir() if (p / "__init__.py").exists()} | {
    "checkout_operator"
}


def imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(COMPONENTS - SHARED - {"checkout_operator"}))
def test_a_service_imports_no_other_component(package: str) -> None:
    others = COMPONENTS - SHARED - {package}
    found = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (SERVICES / package).rglob("*.py")
        for name in imported(path) & others
    }
    assert not found, sorted(found)


def test_the_shared_kit_imports_no_component() -> None:
    found = {
        f"{path.relative_to(ROOT)} imports {name}"
        for shared in ("saga_kit", "midtrans")
        for path in (SERVICES / shared).rglob("*.py")
        for name in imported(path) & (COMPONENTS - SHARED)
    }
    assert not found, sorted(found)
