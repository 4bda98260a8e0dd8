"""Subject access requests: `veil dsar --camera NAME --from TIME --to TIME -o FILE.zip`.

The answer comes from the ledger: every source of the camera whose capture time overlaps the
range (a video from ``captured_at`` for ``duration_s``; an image at one instant), erased sources
excluded. The zip holds only redacted media (the raw originals show other people), read with the
operator's credentials, plus a manifest in JSON and CSV: lineage (jobs, model, parameters,
detection counts), processing policy and retention dates. Sources with no redacted output yet
(queued, failed) are listed without media, so the subject learns that the record exists.

Hazard: the zip is personal data of the subject and of nobody else only because the media are
redacted; never add originals or file names (a file name can name someone else).
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from infra import db, ledger
from infra.db import Conn
from infra.objectstore import client_for, get_bytes
from infra.settings import Settings
from schemas.enums import AuditAction

_SOURCES_SQL = """
SELECT id, kind, media_format, camera, captured_at, duration_s, policy_name, policy_version,
       policy, created_at
FROM sources
WHERE camera = %(camera)s AND erased_at IS NULL AND captured_at IS NOT NULL
  AND captured_at <= %(to)s
  AND captured_at + make_interval(secs => coalesce(duration_s, 0)) >= %(from)s
ORDER BY captured_at, id
"""

CSV_FIELDS = ["source_id", "file", "kind", "camera", "captured_at", "duration_s", "policy",
              "redacted_sha256", "model_version", "detections", "raw_delete_due",
              "raw_deleted_at", "redacted_delete_due", "state"]


@dataclass
class DsarResult:
    path: Path
    sources: list[str]
    files: int


def _to_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def export_dsar(settings: Settings, camera: str, start: datetime, end: datetime, out: Path,
                actor: str) -> DsarResult:
    """Write the access-request zip to ``out`` (atomically) and audit each source it holds."""
    start, end = _to_utc(start), _to_utc(end)
    if end < start:
        raise ValueError(f"--to ({end.isoformat()}) is before --from ({start.isoformat()})")
    s3 = client_for("operator", settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    entries: list[dict[str, Any]] = []
    try:
        with db.connect(settings) as conn, zipfile.ZipFile(partial, "w") as zf:
            sources = conn.execute(_SOURCES_SQL, {"camera": camera, "from": start, "to": end})
            for index, source in enumerate(sources.fetchall(), start=1):
                entry = _entry(conn, settings, source)
                output = entry.pop("_output")
                if output is not None:
                    ext = PurePosixPath(output["key"]).suffix
                    name = f"media/{index:04d}_{source['captured_at']:%Y%m%dT%H%M%SZ}_" \
                           f"{source['id']}{ext}"
                    data = get_bytes(s3, output["bucket"], output["key"],
                                     version_id=output["version_id"])
                    zf.writestr(zipfile.ZipInfo(name, _zip_time(source["captured_at"])), data,
                                compress_type=zipfile.ZIP_STORED)  # media are compressed
                    entry["file"] = name
                entries.append(entry)
            manifest = {"request": {"camera": camera, "from": start.isoformat(),
                                    "to": end.isoformat(),
                                    "generated_at": datetime.now(UTC).isoformat(),
                                    "generated_by": actor},
                        "sources": entries}
            zf.writestr("manifest.json", json.dumps(manifest, indent=2, default=str),
                        compress_type=zipfile.ZIP_DEFLATED)
            zf.writestr("manifest.csv", _csv(entries), compress_type=zipfile.ZIP_DEFLATED)
            zf.writestr("README.txt", _readme(camera, start, end, entries),
                        compress_type=zipfile.ZIP_DEFLATED)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    with db.transaction(settings) as conn:
        for entry in entries:
            ledger.audit(conn, actor, AuditAction.DSAR_EXPORT, source_id=entry["source_id"],
                         detail={"camera": camera, "from": start.isoformat(),
                                 "to": end.isoformat(), "media": entry["file"] is not None})
    return DsarResult(out, [e["source_id"] for e in entries],
                      sum(1 for e in entries if e["file"]))


def _entry(conn: Conn, settings: Settings, source: dict[str, Any]) -> dict[str, Any]:
    sid = source["id"]
    jobs = conn.execute(
        "SELECT id, kind, chunk_index, state, error, attempts, started_at, finished_at"
        " FROM jobs WHERE source_id = %s ORDER BY kind, chunk_index", (sid,)).fetchall()
    output = conn.execute(
        "SELECT bucket, key, version_id, sha256, size_bytes, content_type, width, height,"
        " model_version, params, stage, created_at FROM artifacts"
        " WHERE source_id = %s AND bucket = %s ORDER BY updated_at DESC, id DESC LIMIT 1",
        (sid, settings.s3.bucket_redacted)).fetchone()
    detections = {r["class"]: r["n"] for r in conn.execute(
        "SELECT d.class, count(*) AS n FROM detections d JOIN jobs j ON j.id = d.job_id"
        " WHERE j.source_id = %s GROUP BY d.class ORDER BY d.class", (sid,))}
    deletions = conn.execute(
        "SELECT bucket, key, due_at, state, done_at FROM deletion_tasks WHERE source_id = %s"
        " ORDER BY due_at", (sid,)).fetchall()

    def retention(bucket: str) -> dict[str, Any] | None:
        rows = [d for d in deletions if d["bucket"] == bucket]
        if not rows:
            return None
        due = None if rows[0]["due_at"] >= ledger.KEEP_UNTIL_ERASED else rows[0]["due_at"]
        return {"delete_due": due.isoformat() if due else "kept until erased",
                "state": rows[0]["state"],
                "deleted_at": rows[0]["done_at"].isoformat() if rows[0]["done_at"] else None}

    return {
        "source_id": str(sid), "file": None, "kind": source["kind"],
        "media_format": source["media_format"], "camera": source["camera"],
        "captured_at": source["captured_at"].isoformat(), "duration_s": source["duration_s"],
        "ingested_at": source["created_at"].isoformat(),
        "policy": {"name": source["policy_name"], "version": source["policy_version"],
                   "classes": source["policy"].get("classes"),
                   "method": source["policy"].get("redaction", {}).get("method"),
                   "audio": source["policy"].get("audio")},
        "processing": [{"job_id": str(j["id"]), "kind": j["kind"], "chunk": j["chunk_index"],
                        "state": j["state"], "error": j["error"], "attempts": j["attempts"],
                        "started_at": _iso(j["started_at"]),
                        "finished_at": _iso(j["finished_at"])} for j in jobs],
        "output": None if output is None else {
            "sha256": output["sha256"], "size_bytes": output["size_bytes"],
            "content_type": output["content_type"], "width": output["width"],
            "height": output["height"], "model_version": output["model_version"],
            "params": output["params"], "created_at": output["created_at"].isoformat()},
        "detections": detections,
        "retention": {"raw": retention(settings.s3.bucket_raw),
                      "redacted": retention(settings.s3.bucket_redacted)},
        "_output": output,
    }


def _csv(entries: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for e in entries:
        raw, red = e["retention"]["raw"] or {}, e["retention"]["redacted"] or {}
        states = sorted({p["state"] for p in e["processing"]})
        writer.writerow({
            "source_id": e["source_id"], "file": e["file"] or "", "kind": e["kind"],
            "camera": e["camera"], "captured_at": e["captured_at"],
            "duration_s": e["duration_s"] if e["duration_s"] is not None else "",
            "policy": f"{e['policy']['name']} v{e['policy']['version']}",
            "redacted_sha256": (e["output"] or {}).get("sha256", ""),
            "model_version": (e["output"] or {}).get("model_version", ""),
            "detections": sum(e["detections"].values()),
            "raw_delete_due": raw.get("delete_due", ""),
            "raw_deleted_at": raw.get("deleted_at") or "",
            "redacted_delete_due": red.get("delete_due", ""), "state": "/".join(states)})
    return buf.getvalue()


def _readme(camera: str, start: datetime, end: datetime, entries: list[dict[str, Any]]) -> str:
    with_media = sum(1 for e in entries if e["file"])
    return (f"Access request export: camera {camera}, {start.isoformat()} to {end.isoformat()}.\n"
            f"{len(entries)} recordings on record, {with_media} with redacted media in media/.\n"
            "Faces and other personal data of third parties are redacted; originals are not "
            "included.\nmanifest.json: one entry per recording (processing, policy, retention "
            "dates).\nmanifest.csv: the same, one row per recording.\n")


def _zip_time(value: datetime) -> tuple[int, int, int, int, int, int]:
    t = _to_utc(value)
    t = max(t, datetime(1980, 1, 1, tzinfo=UTC))  # zip cannot date files before 1980
    return (t.year, t.month, t.day, t.hour, t.minute, t.second)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def parse_time(text: str) -> datetime:
    """ISO 8601 (``2024-05-01``, ``2024-05-01T08:00``, ``...Z`` or ``+02:00``); naive is UTC."""
    try:
        return _to_utc(datetime.fromisoformat(text.strip()))
    except ValueError as exc:
        raise ValueError(f"not a time: {text!r} (use ISO 8601, e.g. 2024-05-01T08:00:00Z)") \
            from exc

