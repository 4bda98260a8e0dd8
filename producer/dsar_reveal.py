"""`veil dsar --reveal REGION_ID...`: the requester unredacted, everyone else redacted.

The subject is entitled to their own images (Art. 15(3)), not to other people's: the reveal
renders the chosen regions from the raw original, which only exists until its retention runs
out, and redacts everyone else as the worker did (``producer.dsar_media``).

Refusals, each naming the source: the raw original was purged or erased (its key destroyed or
its deletion done: nothing left to reveal from), or the source is under a legal hold set with
``--forbid-reveal``. Every reveal is audited as ``raw_read`` (the original was decrypted) and
``raw_reveal`` (who showed which regions of which source, and for which request).

Hazard: this is the one operator command that decrypts an original, so it uses the worker's
S3 identity and reads the keyring (the roles a worker has); the revealed copy goes only into
the request's zip.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from minio import Minio

from infra import db, keyring, ledger
from infra.db import Conn
from infra.ledger_holds import active_hold
from infra.ledger_rights import DsarSource, Region, chunk_plans, raw_purged_at
from infra.settings import Settings
from infra.video_probe import VideoInfo
from producer.dsar_media import reveal_image, reveal_video
from producer.holds import RightsError
from schemas.enums import AuditAction, SourceKind
from schemas.policy import Policy


@dataclass(frozen=True)
class RevealGrant:
    """A checked, audited permission to read one source's original."""

    source: DsarSource
    data_key: bytes
    revealed: frozenset[int]


def grant_reveal(conn: Conn, source: DsarSource, revealed: frozenset[int], actor: str,
                 request: dict[str, Any], key_settings: Settings | None = None) -> RevealGrant:
    """Check that ``source``'s original may be revealed, load its key and audit the read.
    Raises :class:`RightsError` naming the source and why not."""
    sid = source["id"]
    hold = active_hold(conn, sid)
    if hold is not None and hold.forbids_reveal:
        raise RightsError(f"reveal of source {sid} refused: it is under {hold.describe()}, "
                          "which forbids revealing it")
    purged_at = raw_purged_at(conn, source["raw_bucket"], source["raw_key"])
    if purged_at is not None:
        raise RightsError(f"reveal of source {sid} refused: its raw original was purged at "
                          f"{purged_at:%Y-%m-%d %H:%M:%S %Z}; only the redacted copy "
                          "is left")
    try:
        # The operator's role cannot see the keyring (0008_roles.sql): ``key_settings`` (the
        # worker role, the one that decrypts originals) reads the key when given.
        if key_settings is None:
            data_key = keyring.load_key(conn, sid)
        else:
            with db.connect(key_settings) as key_conn:
                data_key = keyring.load_key(key_conn, sid)
    except keyring.KeyDestroyedError as exc:
        raise RightsError(f"reveal of source {sid} refused: {exc}") from exc
    ledger.audit(conn, actor, AuditAction.RAW_READ, source_id=sid, bucket=source["raw_bucket"],
                 key=source["raw_key"], detail={"for": "dsar_reveal"})
    ledger.audit(conn, actor, AuditAction.RAW_REVEAL, source_id=sid,
                 detail={"regions": sorted(revealed), "request": request})
    return RevealGrant(source, data_key, revealed)


def render_reveal(conn: Conn, s3: Minio, settings: Settings, grant: RevealGrant,
                  regions: list[Region],
                  window_s: tuple[float, float] | None) -> tuple[bytes, str] | None:
    """The revealed copy of one source (bytes, extension); None when a clipped video has no
    frame in the window."""
    source = grant.source
    policy = Policy.model_validate(source["policy"])
    hidden = [r for r in regions if r.id not in grant.revealed]
    where = keyring.RawObject(source["id"], source["raw_bucket"], source["raw_key"],
                              source["raw_version_id"])
    if source["kind"] != SourceKind.VIDEO:
        raw = keyring.read_original(s3, grant.data_key, where, sha256=source["sha256"],
                                    max_bytes=settings.limits.max_file_bytes)
        return reveal_image(raw, hidden, policy, settings.limits.max_image_pixels)
    if source["video"] is None:
        raise RightsError(f"reveal of source {source['id']} refused: the video was never probed")
    info = VideoInfo.from_json(source["video"])
    plans = chunk_plans(conn, source["id"])
    with keyring.RawReader(s3, grant.data_key, where,
                           max_bytes=settings.limits.max_file_bytes) as reader:
        data = reveal_video(reader, info, plans, hidden, policy, window_s)
    return (data, "mp4") if data is not None else None


def check_region_ids(wanted: frozenset[int],
                     regions: dict[uuid.UUID, list[Region]]) -> dict[uuid.UUID, frozenset[int]]:
    """The revealed region ids per source; an id of no source in the request is a usage error
    (``ValueError``), so a typo cannot reveal nothing and look like success."""
    found = {sid: frozenset(r.id for r in rs if r.id in wanted) for sid, rs in regions.items()}
    known = frozenset().union(*found.values()) if found else frozenset()
    unknown = sorted(wanted - known)
    if unknown:
        raise ValueError(f"region {', '.join(map(str, unknown))} is not a region of this "
                         "request's recordings; see `veil dsar ... --preview`")
    return {sid: ids for sid, ids in found.items() if ids}
