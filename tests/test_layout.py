"""The code's shape, as the re-layering issue fixed it: functions stay short, and the import
rule of ARCHITECTURE.md holds (entry points -> producer and workers -> infra -> schemas)."""

from __future__ import annotations

import ast
import re
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


def _imported_modules(path: Path) -> set[str]:
    """Every Veil module ``path`` imports, at any depth (function-level imports too); ``from
    workers import runtime`` counts as ``workers.runtime``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES}


# The in-process paths of the CLI (`veil redact`, `veil dsar`, `veil purge --now`, `veil erase`)
# call the workers' plain functions; no other producer module imports workers.
PRODUCER_MODULES_USING_WORKERS = (
    "producer/redact_local.py", "producer/redact_video.py", "producer/dsar_media.py",
    "producer/cli_jobs.py",
    "producer/erase.py",  # `veil erase --now` calls workers.retention.erase
    "producer/holds.py",  # `veil hold` locks a source and lists its objects as erasure does
    "producer/cli_rights.py",  # `veil purge --now` and `--dry-run` run workers.retention.purge
)
# Celery's side of the workers: the app and its tasks, which the producer only sends by name.
CELERY_MODULES = ("workers.app", "workers.job_task", "workers.tasks", "workers.tasks_video",
                  "workers.tasks_retention")
def test_producer_imports_workers_only_for_in_process_paths_and_never_celery() -> None:
    # the detector sees function-level imports (cli_jobs imports workers inside a function)
    assert "workers.imageio" in _imported_modules(REPO / "producer/cli_jobs.py")
    offenders, celery = [], []
    for path in _modules("producer"):
        used = {m for m in _imported_modules(path) if m.split(".")[0] == "workers"}
        name = str(path.relative_to(REPO))
        if used and name not in PRODUCER_MODULES_USING_WORKERS:
            offenders.append(f"{name}: {sorted(used)}")
        celery.extend(f"{name}: {m}" for m in sorted(used) if m in CELERY_MODULES)
    assert not offenders, "producer modules importing workers:\n" + "\n".join(offenders)
    assert not celery, "producer modules importing Celery tasks:\n" + "\n".join(celery)


# Every statement lives in the ledger (infra/ledger*.py, infra/jobs.py and the other adapters
# of infra/): the producer and the workers hold no SQL, so each role's statements are in one room.
NO_SQL_PACKAGES = ("producer", "workers")
_DB_CALLS = frozenset({"execute", "executemany", "cursor"})
_SQL_WORDS = re.compile(r"\b(SELECT|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM)\b")


def _sql_found(source: str) -> list[str]:
    """Where ``source`` runs a statement itself or spells one: calls of ``.execute(``,
    ``.executemany(`` or ``.cursor(``, and string literals with SQL keywords, by line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in _DB_CALLS):
            found.append(f"{node.lineno}: .{node.func.attr}(")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and _SQL_WORDS.search(node.value)):
            found.append(f"{node.lineno}: {node.value.strip()[:60]!r}")
    return found


def test_producer_and_workers_hold_no_sql() -> None:
    # the detector finds both kinds of SQL (so an empty result below means something)
    assert len(_sql_found('conn.execute("SELECT 1")\nq = f"DELETE FROM t WHERE {x}"\n')) == 3
    assert _sql_found('"""Selects the jobs to delete from the inbox."""\n') == []
    offenders = {str(path.relative_to(REPO)): hits for path in _modules(*NO_SQL_PACKAGES)
                 if (hits := _sql_found(path.read_text(encoding="utf-8")))}
    assert not offenders, f"SQL outside the ledger: {offenders}"


def test_workers_import_nothing_of_the_producer() -> None:
    # the retention worker carries out erasures itself (workers/retention/erase.py)
    offenders = [str(p.relative_to(REPO)) for p in _modules("workers")
                 if "producer" in _imported_tops(p)]
    assert not offenders, f"workers importing the producer: {offenders}"
