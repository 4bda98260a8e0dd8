"""`veil status SOURCE_ID` in text mode: the lineage as lines a person reads (pure rendering;
the end-to-end tests run it against the real stack)."""

from __future__ import annotations

from typing import Any

from producer.cli_jobs import printable
from producer.status import lineage_lines


def _lineage() -> dict[str, Any]:
    return {
        "source": {"id": "s-1", "kind": "video", "media_format": "mp4",
                   "original_name": "gate\n\x1b[31mcam.mp4", "size_bytes": 1234567,
                   "policy_name": "street", "policy_version": 4, "origin": "inbox",
                   "created_at": "2026-12-01T10:00:00.123+00:00", "camera": "gate-2",
                   "captured_at": "2026-11-30T23:59:58+00:00", "raw_bucket": "veil-raw",
                   "raw_key": "sha256/ab/ab.mp4", "raw_version_id": "v1"},
        "jobs": [
            {"id": "j-1", "kind": "chunk", "chunk_index": 1, "state": "succeeded", "attempts": 3,
             "attempt_causes": {"redelivered": 1, "transient": 1, "lease_expired": 0},
             "error": None, "worker": "w@node", "frame_start": 250, "frame_count": 250,
             "frames_done": 250},
            {"id": "j-2", "kind": "assemble", "chunk_index": 0, "state": "failed",
             "attempts": 1, "attempt_causes": {}, "error": "gave up", "worker": None,
             "frame_start": None, "frame_count": None, "frames_done": 0},
        ],
        "artifacts": [{"stage": "redact", "bucket": "veil-redacted", "key": "sources/s-1/r.mp4",
                       "width": None, "height": None, "size_bytes": 999, "sha256": "f" * 64,
                       "model_version": "centerface-x", "params": {}}],
        "detections": [{"class": "face"}, {"class": "plate"}, {"class": "face"}],
        "deletions": [
            {"bucket": "veil-raw", "key": "sha256/ab/ab.mp4", "state": "failed",
             "due_at": "2026-12-31T10:00:00+00:00", "done_at": None,
             "reason": "policy street v4: raw retention", "last_error": "S3 down"},
            {"bucket": "veil-work", "key": "w/1", "state": "done", "due_at": "x",
             "done_at": "2026-12-02T10:00:00+00:00", "reason": "chunk", "last_error": None},
        ],
        "legal_holds": [
            {"reason": "case 7", "set_by": "ann", "set_at": "2026-12-01T11:00:00+00:00",
             "released_by": None, "released_at": None},
            {"reason": "case 3", "set_by": "bob", "set_at": "2026-11-01T11:00:00+00:00",
             "released_by": "ann", "released_at": "2026-11-20T09:00:00+00:00"},
        ],
    }


def test_every_record_of_a_source_gets_its_line() -> None:
    lines = [printable(line) for line in lineage_lines(_lineage())]
    text = "\n".join(lines)
    assert lines[0].startswith("source s-1  video mp4  gate\\n\\x1b[31mcam.mp4  1,234,567 bytes  "
                               "policy street v4  inbox  ingested 2026-12-01 10:00:00")
    assert "  camera gate-2  captured 2026-11-30 23:59:58" in lines
    assert ("job j-1  chunk 1  succeeded  attempts 3 (redelivered 1, transient 1)  worker w@node"
            "  frames 250+250 (250 done)") in lines
    assert "job j-2  assemble  failed  attempts 1  worker -  error: gave up" in lines
    assert any(line.startswith("output redact  veil-redacted/sources/s-1/r.mp4  999 bytes")
               and "guard" not in line for line in lines)
    assert "detections 3  face 2  plate 1" in lines
    assert ("deletion veil-raw/sha256/ab/ab.mp4  failed  due 2026-12-31 10:00:00  (policy street"
            " v4: raw retention)  last error: S3 down") in lines
    assert "deletion veil-work/w/1  done  done 2026-12-02 10:00:00  (chunk)" in lines
    assert "legal hold ACTIVE  set 2026-12-01 11:00:00 by ann: case 7" in lines
    assert "legal hold released 2026-11-20 09:00:00 by ann  set 2026-11-01 11:00:00 by bob: " \
           "case 3" in lines
    # a hostile file name cannot break a line or reach the terminal as an escape sequence
    assert "\x1b" not in text
    assert len(lines) == 11
