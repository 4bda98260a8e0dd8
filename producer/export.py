"""`veil export`: download redacted outputs, named by source id (``--names original``: after
the original's stem, an opt-in that is audited, since a file name can name a person).

Only `redacted` is read, with the operator's credentials; every export is an audit event.
Outputs of erased sources and outputs already purged are skipped and counted, not an error:
they are gone on purpose.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Literal

from minio.error import S3Error

from infra import db, ledger, ledger_artifacts
from infra.objectstore import client_for, get_bytes
from infra.settings import Settings
from schemas.enums import AuditAction

ACTOR = "operator"


@dataclass
class Exported:
    source_id: uuid.UUID
    path: Path | None
    error: str | None = None
    skipped: str | None = None  # why nothing was written: "erased" or "purged"


Names = Literal["source-id", "original"]
_GONE_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "NoSuchObject"})


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
           progress: Callable[[int], None] | None = None,
           names: Names = "source-id") -> list[Exported]:
    """Export the given sources (None: every source with an output) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with db.connect(settings) as conn:
        rows = ledger_artifacts.deliverables(conn, source_ids)
    found = {r["id"] for r in rows}
    results = [Exported(sid, None, f"no source {sid}") for sid in source_ids or []
               if sid not in found]
    client = client_for("operator", settings)
    taken = {p.name for p in out_dir.iterdir()}
    with db.connect(settings, autocommit=True) as conn:
        for row in rows:
            if row["erased_at"] is not None or row["purged"]:
                results.append(Exported(row["id"], None, skipped="erased" if row["erased_at"]
                                        else "purged"))
                continue
            if row["key"] is None:
                if source_ids is not None:
                    results.append(Exported(row["id"], None, f"source {row['id']} has no "
                                            "redacted output (see `veil status` for its state)"))
                continue
            try:
                data = get_bytes(client, row["bucket"], row["key"], version_id=row["version_id"])
            except S3Error as exc:
                if exc.code not in _GONE_CODES:
                    raise
                results.append(Exported(row["id"], None, skipped="purged"))  # deleted meanwhile
                continue
            stem = row["original_name"] if names == "original" else str(row["id"])
            path = out_dir / output_name(stem, row["key"], taken, row["id"])
            path.write_bytes(data)
            ledger.audit(conn, ACTOR, AuditAction.EXPORT, source_id=row["id"],
                         bucket=row["bucket"], key=row["key"], detail={"names": names})
            results.append(Exported(row["id"], path))
            if progress:
                progress(1)
    return results
