"""Capture time (and a video's length) from a file's own metadata, for access requests.

Read at ingest from the bytes already in memory: a JPEG's EXIF ``DateTimeOriginal`` (with
``OffsetTimeOriginal`` when the camera wrote it), a video container's ``creation_time``. Only
headers are parsed, never pixels. EXIF times without an offset are camera-local: read in the
camera's zone when the cameras file gives one (`veil watch`), else taken as UTC (cameras rarely
know their zone); `veil ingest --captured-at` is there for files without metadata. Anything
unreadable yields None; it never fails an ingest (invariant 7).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo

# Imported here, not inside the broad ``except`` below: a missing Pillow must fail loudly at
# start-up, not turn every capture time into None (which silently drops photos from `veil dsar`).
from PIL import Image

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL, _DATETIME_DIGITIZED = 0x9003, 0x9004
_OFFSET_ORIGINAL, _OFFSET_DIGITIZED = 0x9011, 0x9012


@dataclass(frozen=True)
class MediaFacts:
    captured_at: datetime | None = None
    duration_s: float | None = None


def media_facts(data: bytes, kind: str, local_tz: tzinfo = UTC) -> MediaFacts:
    """``local_tz``: the camera's zone (cameras file), for EXIF times written without offset."""
    try:
        if kind == "video":
            return _video_facts(data)
        return MediaFacts(captured_at=exif_capture_time(data, local_tz))
    except Exception:  # metadata is a convenience: bad or hostile headers are ignored
        return MediaFacts()


def exif_capture_time(data: bytes, local_tz: tzinfo = UTC) -> datetime | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(io.BytesIO(data)) as img:
            exif = img.getexif().get_ifd(_EXIF_IFD)
    for stamp_tag, offset_tag in ((_DATETIME_ORIGINAL, _OFFSET_ORIGINAL),
                                  (_DATETIME_DIGITIZED, _OFFSET_DIGITIZED)):
        stamp = exif.get(stamp_tag)
        if not stamp:
            continue
        parsed = datetime.strptime(str(stamp).strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
        offset = _offset(exif.get(offset_tag))
        if offset is None:  # camera-local time: the camera's zone decides (DST included)
            return parsed.replace(tzinfo=local_tz)
        return parsed.replace(tzinfo=offset)
    return None


def _offset(text: object) -> timezone | None:
    """``+02:00`` -> UTC+2; missing or malformed -> None (local time)."""
    value = str(text or "").strip("\x00 ")
    if len(value) == 6 and value[0] in "+-" and value[3] == ":":
        delta = timedelta(hours=int(value[1:3]), minutes=int(value[4:6]))
        return timezone(delta if value[0] == "+" else -delta)
    return None


def _video_facts(data: bytes) -> MediaFacts:
    import av

    with av.open(io.BytesIO(data), "r") as container:
        stamp = container.metadata.get("creation_time")
        duration = container.duration / 1_000_000 if container.duration else None
    return video_facts(stamp, duration)


def video_facts(creation_time: str | None, duration_s: float | None) -> MediaFacts:
    """Facts from a video's ``creation_time`` tag and length (ingest takes both from its probe,
    so the container is opened once)."""
    captured = None
    if creation_time:
        try:
            captured = datetime.fromisoformat(creation_time.replace("Z", "+00:00"))
        except ValueError:
            captured = None
        if captured is not None and captured.tzinfo is None:
            captured = captured.replace(tzinfo=UTC)
    return MediaFacts(captured_at=captured, duration_s=duration_s)
