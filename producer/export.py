"""`veil export`: download redacted outputs, named after the original's stem.

Only `redacted` is read, with the operator's credentials; every export is an audit event.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from infra import db, ledger
from infra.objectstore import client_for, get_bytes
from infra.settings import Settings
from schemas.enums import AuditAction, Stage

ACTOR = "operator"


@dataclass
class Exported:
    source_id: uuid.UUID
    path: Path | None
    error: str | None = None


def output_name(original_name: str, output_key: str, taken: set[str], source_id: uuid.UUID) -> str:
    """``IMG_1.jpeg`` + key ``.../redacted.jpg`` -> ``IMG_1.jpg``; clashes get the source id."""
    stem = PurePath(original_name).stem or str(source_id)
    ext = PurePath(output_key).suffix
    name = f"{stem}{ext}"
    if name in taken:
        name = f"{stem}-{str(source_id)[:8]}{ext}"
    taken.add(name)
    return name


def export(source_ids: Sequence[uuid.UUID] | None, out_dir: Path, settings: Settings,
           progress: Callable[[int], None] | None = None) -> list[Exported]:
    """Export the given sources (None: every source with an output) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with db.connect(settings) as conn:
        query = ("SELECT s.id, s.original_name, a.bucket, a.key, a.version_id FROM sources s"
                 " LEFT JOIN artifacts a ON a.source_id = s.id AND a.stage = %s")
        params: list[object] = [str(Stage.REDACT)]
        if source_ids is not None:
            query += " WHERE s.id = ANY(%s)"
            params.append(list(source_ids))
        rows = conn.execute(query + " ORDER BY s.created_at, s.id", params).fetchall()
    found = {r["id"] for r in rows}
    results = [Exported(sid, None, f"no source {sid}") for sid in source_ids or []
               if sid not in found]
    client = client_for("operator", settings)
    taken = {p.name for p in out_dir.iterdir()}
    with db.connect(settings, autocommit=True) as conn:
        for row in rows:
            if row["key"] is None:
                if source_ids is not None:
                    results.append(Exported(row["id"], None, f"source {row['id']} has no "
                                            "redacted output (see `veil status` for its state)"))
                continue
            data = get_bytes(client, row["bucket"], row["key"], version_id=row["version_id"])
            path = out_dir / output_name(row["original_name"], row["key"], taken, row["id"])
            path.write_bytes(data)
            ledger.audit(conn, ACTOR, AuditAction.EXPORT, source_id=row["id"],
                         bucket=row["bucket"], key=row["key"])
            results.append(Exported(row["id"], path))
            if progress:
                progress(1)
    return results
