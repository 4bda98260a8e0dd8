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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np
from minio import Minio

from infra import db, ledger
from infra.db import Conn
from infra.ledger_rights import (
    DsarSource,
    RedactedOutput,
    Region,
    recorded_regions,
    source_lineage,
    sources_in_range,
)
from infra.objectstore import client_for, get_bytes
from infra.settings import Settings
from producer.dsar_media import clip_video, contact_sheet, tile, video_frames
from producer.dsar_reveal import RevealGrant, check_region_ids, grant_reveal, render_reveal
from schemas.enums import AuditAction, SourceKind
from schemas.policy import Policy

CSV_FIELDS = ["source_id", "file", "kind", "camera", "captured_at", "duration_s", "policy",
              "redacted_sha256", "model_version", "detections", "raw_delete_due",
              "raw_deleted_at", "redacted_delete_due", "state"]


@dataclass
class DsarResult:
    path: Path
    sources: list[str]
    files: int
    revealed: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class DsarOptions:
    """``clip``: videos cut to the range; ``reveal``: region ids shown unredacted (from the raw
    original); ``received_at``: when the request came in (its response time in `veil report`)."""

    clip: bool = False
    reveal: frozenset[int] = frozenset()
    received_at: datetime | None = None


@dataclass(frozen=True)
class DsarRequest:
    """What the data subject asked for: one camera's recordings between two instants."""

    camera: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class MediaSource:
    """One recording to hand over: its source row, its redacted output (None: none stored),
    the reveal grant if any of its regions are shown, its regions, and the clip window."""

    source: DsarSource
    output: RedactedOutput | None
    grant: RevealGrant | None
    regions: list[Region]
    window: tuple[float, float] | None


def _to_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _check_range(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    start, end = _to_utc(start), _to_utc(end)
    if end < start:
        raise ValueError(f"--to ({end.isoformat()}) is before --from ({start.isoformat()})")
    return start, end


def export_dsar(settings: Settings, asked: DsarRequest, out: Path, actor: str,
                options: DsarOptions | None = None) -> DsarResult:
    """Write the access-request zip to ``out`` (atomically) and audit each source it holds.

    Reveals are checked (and refused, naming the source) before anything is written."""
    options = options or DsarOptions()
    camera = asked.camera
    start, end = _check_range(asked.start, asked.end)
    request = {"camera": camera, "from": start.isoformat(), "to": end.isoformat()}
    s3 = client_for("operator", settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    entries: list[dict[str, Any]] = []
    try:
        with db.connect(settings, autocommit=True) as conn:
            sources = sources_in_range(conn, camera, start, end)
            regions = recorded_regions(conn, [s["id"] for s in sources])
            revealed = check_region_ids(options.reveal, regions)
            with conn.transaction():  # the reads are audited before they happen
                grants = {sid: grant_reveal(conn, next(s for s in sources if s["id"] == sid),
                                            ids, actor, request, settings.for_db_role("worker"))
                          for sid, ids in revealed.items()}
            raw_s3 = client_for("worker", settings) if grants else s3
            with zipfile.ZipFile(partial, "w") as zf:
                for index, source in enumerate(sources, start=1):
                    entry = _entry(conn, settings, source)
                    media = _media(conn, settings, s3, raw_s3, MediaSource(
                        source, entry.pop("_output"), grants.get(source["id"]),
                        regions[source["id"]],
                        _window(source, start, end) if options.clip else None))
                    entry["revealed_regions"] = sorted(revealed.get(source["id"], ()))
                    if media is not None:
                        name = f"media/{index:04d}_{source['captured_at']:%Y%m%dT%H%M%SZ}_" \
                               f"{source['id']}.{media[1]}"
                        zf.writestr(zipfile.ZipInfo(name, _zip_time(source["captured_at"])),
                                    media[0], compress_type=zipfile.ZIP_STORED)
                        entry["file"] = name
                    entries.append(entry)
                _write_manifest(zf, request, actor, options, entries)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    _audit_export(settings, actor, request, options, entries)
    return DsarResult(out, [e["source_id"] for e in entries],
                      sum(1 for e in entries if e["file"]),
                      {str(k): sorted(v) for k, v in revealed.items()})


def preview_dsar(settings: Settings, camera: str, start: datetime, end: datetime, out: Path,
                 actor: str) -> list[dict[str, Any]]:
    """Write the contact sheet (PNG) of every recorded region of the request's recordings,
    drawn on their *redacted* outputs, and return the regions (with the sheet's tile order).

    The operator picks the requester's region ids from it for ``--reveal``; the sheet shows no
    face, so picking needs no face recognition and shows nobody's face to the operator."""
    start, end = _check_range(start, end)
    s3 = client_for("operator", settings)
    tiles, listed = [], []
    with db.connect(settings, autocommit=True) as conn:
        sources = sources_in_range(conn, camera, start, end)
        regions = recorded_regions(conn, [s["id"] for s in sources])
        for source in sources:
            output = _entry(conn, settings, source)["_output"]
            found = regions[source["id"]]
            if output is None or not found:
                continue
            data = get_bytes(s3, output["bucket"], output["key"], version_id=output["version_id"])
            frames = _frames_of(data, source["kind"], {_middle(r) for r in found})
            for region in found:
                frame = frames.get(_middle(region))
                if frame is None:
                    continue
                caption = f"{source['captured_at']:%m-%d %H:%M:%S} {str(source['id'])[:8]}"
                tiles.append(tile(frame, region, caption))
                listed.append({**region.to_json(), "tile": len(tiles),
                               "captured_at": source["captured_at"].isoformat()})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(contact_sheet(tiles))
    with db.transaction(settings) as conn:
        for sid in sorted({r["source_id"] for r in listed}):
            ledger.audit(conn, actor, AuditAction.DSAR_PREVIEW, source_id=sid,
                         detail={"camera": camera, "from": start.isoformat(),
                                 "to": end.isoformat(),
                                 "regions": [r["region_id"] for r in listed
                                             if r["source_id"] == sid]})
    return listed


def _middle(region: Region) -> int:
    return (region.first_frame + region.last_frame) // 2


def _frames_of(data: bytes, kind: str, wanted: set[int]) -> dict[int, Any]:
    if kind == SourceKind.VIDEO:
        return dict(video_frames(data, wanted))
    frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return {0: frame} if frame is not None else {}


def _window(source: DsarSource, start: datetime, end: datetime) -> tuple[float, float]:
    """The request's range in seconds from the recording's start."""
    at = source["captured_at"]
    return (max(0.0, (start - at).total_seconds()), (end - at).total_seconds())


def _media(conn: Conn, settings: Settings, s3: Minio, raw_s3: Minio,
           media: MediaSource) -> tuple[bytes, str] | None:
    """The file for one recording: revealed from the raw original, or the redacted output
    (cut to the window for a clipped video); None when there is nothing to hand over."""
    source, output, grant = media.source, media.output, media.grant
    regions, window = media.regions, media.window
    if grant is not None:
        return render_reveal(conn, raw_s3, settings, grant, regions,
                             window if source["kind"] == SourceKind.VIDEO else None)
    if output is None:
        return None
    data = get_bytes(s3, output["bucket"], output["key"], version_id=output["version_id"])
    ext = PurePosixPath(output["key"]).suffix.lstrip(".")
    if window is not None and source["kind"] == SourceKind.VIDEO:
        clipped = clip_video(data, window, Policy.model_validate(source["policy"]))
        return (clipped, ext) if clipped is not None else None
    return data, ext


def _write_manifest(zf: zipfile.ZipFile, request: dict[str, Any], actor: str,
                    options: DsarOptions, entries: list[dict[str, Any]]) -> None:
    manifest = {"request": {**request, "generated_at": datetime.now(UTC).isoformat(),
                            "generated_by": actor, "clip": options.clip,
                            "revealed_regions": sorted(options.reveal)},
                "sources": entries}
    zf.writestr("manifest.json", json.dumps(manifest, indent=2, default=str),
                compress_type=zipfile.ZIP_DEFLATED)
    zf.writestr("manifest.csv", _csv(entries), compress_type=zipfile.ZIP_DEFLATED)
    zf.writestr("README.txt", _readme(request, options, entries),
                compress_type=zipfile.ZIP_DEFLATED)


def _audit_export(settings: Settings, actor: str, request: dict[str, Any],
                  options: DsarOptions, entries: list[dict[str, Any]]) -> None:
    received = _to_utc(options.received_at) if options.received_at else None
    with db.transaction(settings) as conn:
        for entry in entries:
            ledger.audit(conn, actor, AuditAction.DSAR_EXPORT, source_id=entry["source_id"],
                         detail={**request, "media": entry["file"] is not None,
                                 "clip": options.clip,
                                 "revealed_regions": entry["revealed_regions"],
                                 "received_at": received.isoformat() if received else None})


def _entry(conn: Conn, settings: Settings, source: DsarSource) -> dict[str, Any]:
    sid = source["id"]
    lineage = source_lineage(conn, sid, settings.s3.bucket_redacted)
    jobs, output, deletions = lineage.jobs, lineage.output, lineage.deletions

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
                   "audio": source["policy"].get("audio"),
                   "purpose": source["purpose"], "legal_basis": source["legal_basis"]},
        "processing": [{"job_id": str(j["id"]), "kind": j["kind"], "chunk": j["chunk_index"],
                        "state": j["state"], "error": j["error"], "attempts": j["attempts"],
                        "started_at": _iso(j["started_at"]),
                        "finished_at": _iso(j["finished_at"])} for j in jobs],
        "output": None if output is None else {
            "sha256": output["sha256"], "size_bytes": output["size_bytes"],
            "content_type": output["content_type"], "width": output["width"],
            "height": output["height"], "model_version": output["model_version"],
            "params": output["params"], "created_at": output["created_at"].isoformat()},
        "detections": lineage.detections,
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


def _readme(request: dict[str, Any], options: DsarOptions,
            entries: list[dict[str, Any]]) -> str:
    with_media = sum(1 for e in entries if e["file"])
    shown = (f"Regions {', '.join(map(str, sorted(options.reveal)))} (the requester) are shown "
             "unredacted; everyone else is redacted.\n" if options.reveal else
             "Faces and other personal data of third parties are redacted; originals are not "
             "included.\n")
    return (f"Access request export: camera {request['camera']}, {request['from']} to "
            f"{request['to']}.\n{len(entries)} recordings on record, {with_media} with media in"
            f" media/{' (videos cut to the range)' if options.clip else ''}.\n{shown}"
            "manifest.json: one entry per recording (processing, policy, retention "
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

