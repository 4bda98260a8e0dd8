"""Subject access requests through the real stack: the zip holds exactly the camera's sources
whose capture time is in range (capture time from EXIF when present), opens with standard tools,
and every source exported is audited."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from infra.settings import Settings
from producer.capture_time import media_facts
from tests.conftest import face_image, jpeg_bytes
from tests.rights import ingest_file, rows, veil
from workers.retention.erase import erase_source


def _jpeg_taken_at(seed: int, stamp: str, offset: str | None) -> bytes:
    img = Image.fromarray(cv2.cvtColor(face_image(seed), cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    ifd = exif.get_ifd(0x8769)
    ifd[0x9003] = stamp  # DateTimeOriginal
    if offset:
        ifd[0x9011] = offset  # OffsetTimeOriginal
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def test_dsar_zip_holds_exactly_the_sources_in_range(
        clean_ledger: Settings, worker: object, tmp_path: Path, unique_seed: int) -> None:
    settings = clean_ledger
    # given camera A's recordings in range: one dated by its EXIF (08:30 at +02:00, i.e. 06:30
    # UTC, which wins over the command line), one dated on the command line, one corrupt file
    batch = tmp_path / "cam-a"
    batch.mkdir()
    (batch / "exif.jpg").write_bytes(_jpeg_taken_at(unique_seed, "2024:05:01 08:30:00", "+02:00"))
    (batch / "plain.jpg").write_bytes(jpeg_bytes(face_image(unique_seed + 1)))
    (batch / "broken.jpg").write_bytes(jpeg_bytes(face_image(unique_seed + 2))[:600])
    run = veil("ingest", str(batch), "--camera", "cam-A", "--captured-at", "2024-05-01T07:00:00",
               "--wait", "--json", "--timeout", "120")
    assert run.returncode == 1, run.stderr  # the broken file fails, the others succeed
    ids = {s["file"]: s["source_id"] for s in json.loads(run.stdout)["sources"]}
    # and others out of the request: another day, another camera, and an erased recording
    in_range = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
    for name, seed in (("later.jpg", 3), ("other.jpg", 4), ("erased.jpg", 5)):
        (tmp_path / name).write_bytes(jpeg_bytes(face_image(unique_seed + seed)))
    later = ingest_file(settings, tmp_path / "later.jpg", camera="cam-A",
                captured_at=datetime(2024, 5, 3, tzinfo=UTC))
    other = ingest_file(settings, tmp_path / "other.jpg", camera="cam-B", captured_at=in_range)
    gone = ingest_file(settings, tmp_path / "erased.jpg", camera="cam-A", captured_at=in_range)
    erase_source(settings, gone.source_id, "erasure request", "operator:test")  # type: ignore[arg-type]

    # when the access request is exported
    out = tmp_path / "request" / "dsar.zip"
    run = veil("dsar", "--camera", "cam-A", "--from", "2024-05-01T06:00:00Z",
               "--to", "2024-05-01T12:00:00+00:00", "-o", str(out), "--json")
    assert run.returncode == 0, run.stderr

    # then it opens with standard tools
    if shutil.which("unzip"):
        assert subprocess.run(["unzip", "-t", str(out)], capture_output=True).returncode == 0
    assert subprocess.run([sys.executable, "-m", "zipfile", "-t", str(out)],
                          capture_output=True).returncode == 0
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("manifest.json"))
        table = list(csv.DictReader(io.StringIO(zf.read("manifest.csv").decode())))
        media = {n: zf.read(n) for n in names if n.startswith("media/")}
    # and holds exactly camera A's three recordings in range, two with redacted media
    expected = {ids["exif.jpg"], ids["plain.jpg"], ids["broken.jpg"]}
    assert {s["source_id"] for s in manifest["sources"]} == expected
    assert {r["source_id"] for r in table} == expected
    assert len(media) == 2 and {"manifest.json", "manifest.csv", "README.txt"} <= names
    for data in media.values():
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None
    by_id = {s["source_id"]: s for s in manifest["sources"]}
    assert by_id[ids["exif.jpg"]]["captured_at"] == "2024-05-01T06:30:00+00:00"
    assert by_id[ids["plain.jpg"]]["captured_at"] == "2024-05-01T07:00:00+00:00"
    assert by_id[ids["broken.jpg"]]["file"] is None
    assert by_id[ids["broken.jpg"]]["processing"][0]["state"] == "failed"
    # and it carries lineage and retention dates, but no original file name
    entry = by_id[ids["plain.jpg"]]
    assert entry["output"]["model_version"] and entry["policy"]["name"] == "default"
    assert entry["retention"]["raw"]["delete_due"] and entry["retention"]["redacted"]
    assert "plain.jpg" not in json.dumps(manifest)
    # and every exported source is on the audit trail, and no source left out of the request
    # (audit events of earlier tests stay: the trail is append-only)
    audited = {str(r["source_id"]) for r in rows(
        settings, "SELECT source_id FROM audit_events WHERE action = 'dsar_export'")}
    assert expected <= audited
    assert not audited & {str(later.source_id), str(other.source_id), str(gone.source_id)}


def test_bad_range_is_refused(clean_ledger: Settings, tmp_path: Path) -> None:
    run = veil("dsar", "--camera", "x", "--from", "2024-05-02", "--to", "2024-05-01",
               "-o", str(tmp_path / "x.zip"))
    assert run.returncode == 2 and "before --from" in run.stderr
    run = veil("dsar", "--camera", "x", "--from", "yesterday", "--to", "2024-05-01",
               "-o", str(tmp_path / "x.zip"))
    assert run.returncode == 2 and "yesterday" in run.stderr
    assert not (tmp_path / "x.zip").exists()


def test_video_capture_time_and_length_come_from_the_container(tmp_path: Path) -> None:
    import av
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        container.metadata["creation_time"] = "2024-05-01T06:45:00.000000Z"
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(20):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 10, np.uint8), "rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    facts = media_facts(path.read_bytes(), "video")
    assert facts.captured_at == datetime(2024, 5, 1, 6, 45, tzinfo=UTC)
    assert facts.duration_s is not None and 1.8 <= facts.duration_s <= 2.2
    assert media_facts(b"\x00not a video", "video").captured_at is None
