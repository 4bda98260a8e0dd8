"""Ingest to export through the real stack: the `veil` CLI, Redis, a Celery worker process,
SeaweedFS S3 and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import psycopg
import pytest

from infra.settings import Settings
from tests.conftest import face_image, jpeg_bytes
from tests.media import (
    has_exif,
    jpeg_with_gps,
    jpeg_with_orientation,
    png_bomb,
    png_text_chunks,
    png_with_text,
)

VEIL = str(Path(sys.executable).parent / "veil")


def veil(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VEIL, *args], capture_output=True, text=True, timeout=timeout,
                          env=os.environ.copy())


def _face_destroyed(original: np.ndarray, output: np.ndarray) -> bool:
    """The astronaut's face (known region at 256 px) changed beyond recognition."""
    from skimage.metrics import structural_similarity
    y1, y2, x1, x2 = 35, 105, 100, 160
    a = cv2.cvtColor(original[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    b = cv2.cvtColor(output[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    return bool(structural_similarity(a, b, win_size=7) < 0.6)


@pytest.fixture()
def batch(tmp_path: Path, unique_seed: int) -> dict[str, Path]:
    folder = tmp_path / "inbox"
    (folder / "nested").mkdir(parents=True)
    files = {
        "face": (folder / "crew.jpeg", jpeg_with_gps(face_image(unique_seed))),
        "png": (folder / "nested" / "badge.png", png_with_text(face_image(unique_seed + 1))),
        "rotated": (folder / "rotated.jpg",
                    jpeg_with_orientation(face_image(unique_seed + 2)[:, :200], 6)),
        "corrupt": (folder / "corrupt.jpg", jpeg_bytes(face_image(unique_seed + 3))[:700]),
        "empty": (folder / "empty.jpg", b""),
        "bomb": (folder / "bomb.png", png_bomb()),
    }
    for path, data in files.values():
        path.write_bytes(data)
    return {name: path for name, (path, _) in files.items()}


def test_ingest_wait_export_end_to_end(clean_ledger: Settings, worker: object,
                                       batch: dict[str, Path], tmp_path: Path) -> None:
    # given a folder with three good images and three bad files
    # when it is ingested and waited for
    run = veil("ingest", str(batch["face"].parent), "--wait", "--json", "--timeout", "180")
    # then the good ones succeed, each bad one fails with a reason, and the exit code says so
    assert run.returncode == 1, run.stderr
    report = {s["file"]: s for s in json.loads(run.stdout)["sources"]}
    assert len(report) == 6
    for name in ("crew.jpeg", "badge.png", "rotated.jpg"):
        assert report[name]["state"] == "succeeded", report[name]
        assert report[name]["output_key"].startswith(f"sources/{report[name]['source_id']}/")
    reasons = {n: report[n]["error"] or "" for n in ("corrupt.jpg", "empty.jpg", "bomb.png")}
    assert all(report[n]["state"] == "failed" for n in reasons), report
    assert "empty" in reasons["empty.jpg"].lower()
    assert "limit" in reasons["bomb.png"].lower()
    assert reasons["corrupt.jpg"]
    # and the export is named after the originals, with faces gone and no metadata
    out = tmp_path / "out"
    exported = veil("export", "--all", "--names", "original", "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    assert sorted(p.name for p in out.iterdir()) == ["badge.png", "crew.jpg", "rotated.jpg"]
    crew = (out / "crew.jpg").read_bytes()
    assert not has_exif(crew) and b"SecretCam" not in crew
    badge = (out / "badge.png").read_bytes()
    assert png_text_chunks(badge) == [] and b"Secret Street" not in badge
    original = cv2.imdecode(np.frombuffer(batch["face"].read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert _face_destroyed(original, cv2.imread(str(out / "crew.jpg")))
    # the rotated input (200 wide, 256 high, orientation 6) comes out upright: 256 wide, 200 high
    assert cv2.imread(str(out / "rotated.jpg")).shape[:2] == (200, 256)


def test_status_shows_lineage_and_failures(clean_ledger: Settings, worker: object,
                                           batch: dict[str, Path]) -> None:
    run = veil("ingest", str(batch["face"]), str(batch["empty"]), "--wait", "--json")
    sources = {s["file"]: s for s in json.loads(run.stdout)["sources"]}
    overview = json.loads(veil("status", "--json").stdout)
    assert overview["jobs"]["succeeded"] == 1 and overview["jobs"]["failed"] == 1
    assert overview["failures"][0]["source_id"] == sources["empty.jpg"]["source_id"]
    assert overview["deletions"]["due"] >= 2  # raw deadlines (and the output's)
    crew = sources["crew.jpeg"]["source_id"]
    lineage = json.loads(veil("status", crew, "--json").stdout)
    artifact = lineage["artifacts"][0]
    assert artifact["model_version"].startswith("centerface-")
    assert artifact["params"] and len(artifact["sha256"]) == 64
    faces = sum(d["class"] == "face" for d in lineage["detections"])
    assert faces > 0
    assert {d["bucket"] for d in lineage["deletions"]} == {
        clean_ledger.s3.bucket_raw, clean_ledger.s3.bucket_redacted}
    # the same lineage as a person reads it: a line per record, no JSON
    text = veil("status", crew).stdout.splitlines()
    assert text[0].startswith(f"source {crew}  image jpeg  crew.jpeg  ")
    assert f"job {lineage['jobs'][0]['id']}  image  succeeded  attempts 1" in "\n".join(text)
    assert any(line.startswith(f"output redact  {artifact['bucket']}/{artifact['key']}")
               and line.endswith(f"guard {artifact['params']['guard']['action']}")
               for line in text), text
    assert f"detections {len(lineage['detections'])}  face {faces}" in text
    assert sorted(line.split()[1].split("/")[0] for line in text
                  if line.startswith("deletion ")) == sorted(
        [clean_ledger.s3.bucket_raw, clean_ledger.s3.bucket_redacted])
    failed = veil("status", sources["empty.jpg"]["source_id"]).stdout
    assert "  failed  " in failed and "error: " in failed and "{" not in failed


def test_same_bytes_twice_make_one_source(clean_ledger: Settings, worker: object,
                                          batch: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "copy-of-crew.jpg"
    copy.write_bytes(batch["face"].read_bytes())
    first = json.loads(veil("ingest", str(batch["face"]), "--wait", "--json").stdout)
    second = json.loads(veil("ingest", str(copy), "--json").stdout)
    assert second["sources"][0]["duplicate"] is True
    assert second["sources"][0]["source_id"] == first["sources"][0]["source_id"]
    assert second["sources"][0]["state"] == "succeeded"
    with psycopg.connect(clean_ledger.db.url) as conn:
        assert conn.execute("SELECT count(*) FROM sources").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (1,)


def test_cli_user_errors_are_one_line(services: Settings, tmp_path: Path) -> None:
    missing = veil("ingest", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad_policy = veil("ingest", str(tmp_path), "--policy", "nosuch")
    assert bad_policy.returncode == 2 and "unknown policy" in bad_policy.stderr
    bad_ttl = veil("ingest", str(tmp_path), "--raw-ttl", "soon")
    assert bad_ttl.returncode == 2 and "not a duration" in bad_ttl.stderr


def test_ingest_from_an_s3_inbox(clean_ledger: Settings, worker: object,
                                 unique_seed: int) -> None:
    # given objects uploaded to the inbox bucket by some other S3 client
    from infra.objectstore import client_for, delete_all_versions, put_bytes
    admin = client_for("admin", clean_ledger)
    inbox, prefix = clean_ledger.s3.bucket_inbox, f"upload-{unique_seed}/"
    keys = [f"{prefix}cam1/a.jpg", f"{prefix}cam1/b.jpg"]
    for i, key in enumerate(keys):
        put_bytes(admin, inbox, key, jpeg_bytes(face_image(unique_seed + 10 + i)), "image/jpeg")
    try:
        # when `veil ingest s3://inbox/prefix` runs
        run = veil("ingest", f"s3://{inbox}/{prefix}", "--wait", "--json")
        # then both are redacted, named after their keys' file names
        assert run.returncode == 0, run.stderr
        sources = json.loads(run.stdout)["sources"]
        assert sorted(s["file"] for s in sources) == ["a.jpg", "b.jpg"]
        assert all(s["state"] == "succeeded" for s in sources)
    finally:
        for key in keys:
            delete_all_versions(admin, inbox, key)


def test_bad_s3_address_is_a_usage_error(services: Settings) -> None:
    run = veil("ingest", "s3:///nothing")
    assert run.returncode == 2 and "s3://bucket/prefix" in run.stderr
