"""The code's shape, as the re-layering issue fixed it: functions stay short, and the import
rule of ARCHITECTURE.md holds (entry points -> producer and workers -> infra -> schemas)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("schemas", "infra", "workers", "producer")
MAX_FUNCTION_LINES = 60


def _modules(*packages: str) -> list[Path]:
    return sorted(p for top in packages for p in (REPO / top).rglob("*.py"))


def test_no_function_is_longer_than_60_lines() -> None:
    long = []
    for path in _modules(*PACKAGES):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines})")
    assert not long, "functions over 60 lines:\n" + "\n".join(long)


def _imported_tops(path: Path) -> set[str]:
    tops = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            tops.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            tops.update(alias.name.split(".")[0] for alias in node.names)
    return tops & set(PACKAGES)


def test_schemas_import_nothing_of_veil_and_infra_only_schemas() -> None:
    # then contracts stay free of I/O code, and adapters never reach up into the processes
    for path in _modules("schemas"):
        assert _imported_tops(path) <= {"schemas"}, path
    for path in _modules("infra"):
        assert _imported_tops(path) <= {"infra", "schemas"}, path
