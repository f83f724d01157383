"""Layers point one way: the runtime never imports the simulator, low layers nothing above."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "multiagent"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _modules(subpackage: str) -> list[Path]:
    return sorted((PACKAGE / subpackage).rglob("*.py"))


@pytest.mark.parametrize(
    ("subpackage", "forbidden"),
    [
        (
            "models",
            (
                "multiagent.sim",
                "multiagent.nodes",
                "multiagent.graphs",
                "multiagent.bench",
                "multiagent.distributed",
                "multiagent.commands",
            ),
        ),
        ("nodes", ("multiagent.sim", "multiagent.graphs", "multiagent.bench")),
        (
            "safety",
            (
                "multiagent.models",
                "multiagent.nodes",
                "multiagent.graphs",
                "multiagent.persistence",
                "multiagent.sim",
                "multiagent.distributed",
                "multiagent.commands",
            ),
        ),
        ("graphs", ("multiagent.sim", "multiagent.bench")),
        ("persistence", ("multiagent.sim", "multiagent.nodes", "multiagent.graphs")),
        ("models", ("multiagent.observability",)),
        (
            "policies",
            (
                "multiagent.models",
                "multiagent.nodes",
                "multiagent.graphs",
                "multiagent.sim",
                "multiagent.observability",
            ),
        ),
    ],
)
def test_layer_imports_nothing_above_it(subpackage: str, forbidden: tuple[str, ...]) -> None:
    offending = {
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in _modules(subpackage)
        for name in _imports(path)
        if name.startswith(forbidden)
    }
    assert not offending, sorted(offending)


def test_the_simulated_provider_is_registered_by_import_path_only() -> None:
    from multiagent.models.factory import PROVIDERS

    assert PROVIDERS["sim"] == "multiagent.sim.model:build_simulated_model"


def test_the_shared_redis_connection_sits_below_the_runtime_and_the_queue() -> None:
    allowed = ("multiagent.errors", "multiagent.policies")
    ours = {n for n in _imports(PACKAGE / "_redis.py") if n.startswith("multiagent")}
    assert all(name.startswith(allowed) for name in ours), sorted(ours)


def test_the_metrics_api_sits_at_the_bottom() -> None:
    ours = {n for n in _imports(PACKAGE / "_metrics.py") if n.startswith("multiagent")}
    assert ours <= {"multiagent._metrics_data", "multiagent._metrics_readers"}, sorted(ours)
    readers = {n for n in _imports(PACKAGE / "_metrics_readers.py") if n.startswith("multiagent")}
    assert readers <= {"multiagent._metrics_data", "multiagent._otlp"}, sorted(readers)
    otlp = {n for n in _imports(PACKAGE / "_otlp.py") if n.startswith("multiagent")}
    assert otlp <= {"multiagent.errors"}, sorted(otlp)
    errors = {n for n in _imports(PACKAGE / "errors.py") if n.startswith("multiagent")}
    assert not errors, sorted(errors)
    below = {n for n in _imports(PACKAGE / "_metrics_data.py") if n.startswith("multiagent")}
    assert not below, sorted(below)
