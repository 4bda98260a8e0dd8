"""Videos through the real stack: `veil ingest` -> PostgreSQL + Redis -> a Celery worker process
(chunk tasks, then the assembly the last chunk enqueues) -> SeaweedFS S3 -> `veil export`."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import psycopg
import pytest
import redis

from infra import outbox
from infra.broker import make_celery
from infra.objectstore import client_for, object_exists
from infra.settings import Settings
from producer.ingest import IngestOptions, _file_input, _ingest_one, wait_for
from schemas.policy import Policy
from tests.conftest import start_worker, stop_worker
from tests.videos import VideoSpec, decode_video, face_core, face_destroyed, make_video, write

VEIL = str(Path(sys.executable).parent / "veil")
POLICIES = """
[policies.video-test]
raw_retention_s = "1h"
purpose = "test recordings"
legal_basis = { art6 = "legitimate_interests", detail = "tests" }
retention_rationale = "tests"
classes = ["face"]
chunk_seconds = 0.4
[policies.video-keep-audio]
raw_retention_s = "1h"
purpose = "test recordings"
legal_basis = { art6 = "legitimate_interests", detail = "tests" }
retention_rationale = "tests"
classes = ["face"]
chunk_seconds = 0.4
audio = "keep"
"""
TEST_POLICY = Policy(name="video-test", raw_retention_s=3600, classes=["face"],
                     chunk_seconds=0.4)


def veil(*args: str, env: dict[str, str] | None = None,
         timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VEIL, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def policies_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    path = tmp_path_factory.mktemp("policies") / "policies.toml"
    path.write_text(POLICIES)
    return {"VEIL_POLICIES_FILE": str(path)}


SPECS = {  # 10 frames a chunk at 25 fps with chunk_seconds 0.4
    "meta.mp4": VideoSpec(frames=30, audio=True, title="Secret Title",
                          creation_time="2021-05-04T10:00:00Z", seed=31),
    "rotated.mp4": VideoSpec(frames=24, rotation=90, seed=32),
    "vfr.mp4": VideoSpec(frames=24, vfr=True, time_base=Fraction(1, 1000), seed=33),
    "boundary.mp4": VideoSpec(frames=20, seed=34),  # exactly two chunks
    "short.mp4": VideoSpec(frames=6, seed=35),  # shorter than one chunk
}


@pytest.fixture(scope="module")
def pipeline_run(services: Settings, worker: object, policies_env: dict[str, str],
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """Ingest the videos once (plus one with audio kept), wait, export; the tests read it."""
    folder = tmp_path_factory.mktemp("videos")
    for name, spec in SPECS.items():
        write(folder / name, spec)
    keep = write(tmp_path_factory.mktemp("keep") / "keep.mp4",
                 VideoSpec(frames=30, audio=True, seed=36))
    run = veil("ingest", str(folder), "--policy", "video-test", "--wait", "--json",
               env=policies_env)
    kept = veil("ingest", str(keep), "--policy", "video-keep-audio", "--wait", "--json",
                env=policies_env)
    assert run.returncode == 0 and kept.returncode == 0, run.stderr + kept.stderr
    sources = {s["file"]: s for s in json.loads(run.stdout)["sources"]}
    sources.update({s["file"]: s for s in json.loads(kept.stdout)["sources"]})
    out = tmp_path_factory.mktemp("export")
    exported = veil("export", *[s["source_id"] for s in sources.values()], "--names", "original",
                    "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    yield {"folder": folder, "keep": keep, "sources": sources, "out": out}


def test_every_video_is_redacted_frame_exact_and_clean(pipeline_run: dict) -> None:  # type: ignore[type-arg]
    folder, out, sources = pipeline_run["folder"], pipeline_run["out"], pipeline_run["sources"]
    for name, spec in SPECS.items():
        assert sources[name]["state"] == "succeeded", sources[name]
        assert sources[name]["output_key"].endswith("/redacted.mp4")
        original = (folder / name).read_bytes()
        output = (out / name).read_bytes()
        before, after = decode_video(original, True), decode_video(output, True)
        # the same frames (barcodes), none lost or doubled at a boundary, at the same times
        assert after.indices == before.indices == list(range(spec.frames)), name
        assert after.times == before.times, name
        assert abs(after.duration - before.duration) <= Fraction(1, spec.fps), name
        # upright (the rotated one was stored sideways) and without a rotation left to apply
        assert after.size == (spec.width, spec.height) and after.rotation == 0, name
        for index, (a, b) in enumerate(zip(before.frames, after.frames, strict=True)):
            assert face_destroyed(a, b, face_core(index, spec.width, spec.height)), (name, index)
        with av.open(io.BytesIO(output)) as container:
            assert [s.type for s in container.streams] == ["video"], name  # audio dropped
            assert set(container.metadata) <= {"major_brand", "minor_version",
                                               "compatible_brands"}
        assert b"Secret Title" not in output and b"2021-05-04" not in output
        assert output.find(b"moov") < output.find(b"mdat")  # faststart


def test_audio_is_kept_in_sync_when_the_policy_keeps_it(pipeline_run: dict) -> None:  # type: ignore[type-arg]
    source = pipeline_run["sources"]["keep.mp4"]
    assert source["state"] == "succeeded"
    original = pipeline_run["keep"].read_bytes()
    output = (pipeline_run["out"] / "keep.mp4").read_bytes()
    assert _audio_times(output) == _audio_times(original)
    assert decode_video(output).times == decode_video(original).times


def _audio_times(data: bytes) -> list[Fraction]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        return [Fraction(p.pts) * Fraction(p.time_base) for p in container.demux(stream)
                if p.size]


def test_lineage_records_chunks_frame_ranges_detections_and_chunk_deletion(
        pipeline_run: dict, services: Settings) -> None:  # type: ignore[type-arg]
    source_id = pipeline_run["sources"]["meta.mp4"]["source_id"]
    lineage = json.loads(veil("status", source_id, "--json").stdout)
    chunks = [j for j in lineage["jobs"] if j["kind"] == "chunk"]
    text = veil("status", source_id).stdout
    for index, start in enumerate((0, 10, 20)):
        assert f"  chunk {index}  succeeded  " in text and f"frames {start}+10 (10 done)" in text
    assert [(j["frame_start"], j["frame_count"]) for j in chunks] == [(0, 10), (10, 10), (20, 10)]
    assert all(j["state"] == "succeeded" and j["frames_done"] == 10 for j in chunks)
    assert [j["state"] for j in lineage["jobs"] if j["kind"] == "assemble"] == ["succeeded"]
    final = [a for a in lineage["artifacts"] if a["stage"] == "redact"]
    assert len(final) == 1 and final[0]["model_version"].startswith("centerface-")
    assert [c["frame_start"] for c in final[0]["params"]["chunks"]] == [0, 10, 20]
    # the guard checked one frame in 2 s (50 frames at 25 fps): frame 0, in the first chunk
    guards = [c["guard"] for c in final[0]["params"]["chunks"]]
    assert [g["every_frames"] for g in guards] == [50, 50, 50]
    assert [g["checks"] for g in guards] == [1, 0, 0]
    assert guards[0]["action"] == "passed" and guards[0]["escalated"] is None
    assert final[0]["params"]["encoder"]["codec"] == "libx264"
    faces = [d for d in lineage["detections"] if d["class"] == "face"]
    assert faces and all(d["frame_end"] >= d["frame_index"] for d in faces)
    covered = {f for d in faces for f in range(d["frame_index"], d["frame_end"] + 1)}
    assert covered >= set(range(30))  # the face was tracked through every frame
    work = [d for d in lineage["deletions"] if d["bucket"] == services.s3.bucket_work]
    assert len(work) == 3 and all(d["reason"] == "chunk joined into the output" for d in work)


def test_chunk_tasks_report_progress_for_flower(pipeline_run: dict, services: Settings) -> None:  # type: ignore[type-arg]
    results = redis.Redis.from_url(services.broker.result_url)
    progress = [json.loads(results.get(key) or b"{}") for key in
                results.scan_iter("celery-task-meta-*")]
    done = [p["result"] for p in progress if p.get("status") == "PROGRESS"]
    assert done and all(set(p) == {"job_id", "frames_done", "frames_total"} for p in done)
    assert any(p["frames_done"] == p["frames_total"] == 10 for p in done)


def test_bad_videos_fail_clearly_and_publish_nothing(services: Settings, worker: object,
                                                     policies_env: dict[str, str],
                                                     tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    _audio_only(folder / "voice.mp4")
    corrupt = bytearray(make_video(VideoSpec(frames=40, gop=10, seed=41)))
    middle = corrupt.find(b"mdat") + (len(corrupt) - corrupt.find(b"mdat")) // 2
    corrupt[middle:middle + 3000] = bytes((b * 7 + 13) & 255 for b in corrupt[middle:middle + 3000])
    (folder / "corrupt.mp4").write_bytes(bytes(corrupt))
    (folder / "garbage.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x01" * 500)
    run = veil("ingest", str(folder), "--policy", "video-test", "--wait", "--json",
               "--timeout", "120", env=policies_env)
    assert run.returncode == 1, run.stderr
    report = {s["file"]: s for s in json.loads(run.stdout)["sources"]}
    assert all(s["state"] == "failed" and s["output_key"] is None for s in report.values()), \
        report
    assert "no video stream" in report["voice.mp4"]["error"]
    assert "not a readable video" in report["garbage.mp4"]["error"]
    assert "chunk" in report["corrupt.mp4"]["error"] and "corrupt" in report["corrupt.mp4"]["error"]
    status = json.loads(veil("status", "--json").stdout)
    failed = {f["source_id"] for f in status["failures"]}
    assert {s["source_id"] for s in report.values()} <= failed
    # frames over the pixel limit: refused at ingest, before any work is queued
    big = tmp_path / "big.mp4"
    write(big, VideoSpec(frames=3, width=320, height=240, seed=42))
    strict = services.model_copy(update={"limits": services.limits.model_copy(
        update={"max_image_pixels": 320 * 240 - 1})})
    result, rows = _ingest_one(_file_input(big), IngestOptions(TEST_POLICY), strict,
                               client_for("producer", services))
    assert rows is None and result.state == "failed"
    assert "above the limit" in (result.error or "")


def _audio_only(path: Path) -> None:
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=48000, layout="mono")
        import numpy as np
        for start in range(0, 48000, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt",
                                               layout="mono")
            frame.sample_rate, frame.pts = 48000, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_a_sigkilled_chunk_task_is_redone_and_the_output_is_still_exact(
        services: Settings, tmp_path: Path) -> None:
    from workers.maintenance import sweep

    isolated = {"VEIL_BROKER__QUEUE_PREFIX": "veil-test-video-kill"}
    settings = services.model_copy(update={"broker": services.broker.model_copy(
        update={"queue_prefix": "veil-test-video-kill"})})
    app = make_celery(settings)
    spec = VideoSpec(frames=20, seed=51)
    path = write(tmp_path / "killed.mp4", spec)
    slow = start_worker(extra_env={**isolated, "VEIL_TEST_JOB_DELAY_S": "30"})
    try:
        result, rows = _ingest_one(_file_input(path), IngestOptions(TEST_POLICY), services,
                                   client_for("producer", services))
        assert rows and len(rows) == 2
        outbox.relay(app, settings, older_than_s=0)
        deadline = time.monotonic() + 60
        while _states(services, result.source_id).count("running") == 0:
            assert time.monotonic() < deadline, "no chunk started"
            time.sleep(0.2)
    finally:
        stop_worker(slow, signal.SIGKILL)
    with psycopg.connect(services.db.url) as conn:
        conn.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 s'"
                     " WHERE source_id = %s AND state = 'running'", (result.source_id,))
    assert sweep(app, settings)["requeued"] >= 1
    fresh = start_worker(extra_env=isolated)
    try:
        states = wait_for([result.source_id], services, timeout_s=120)
    finally:
        stop_worker(fresh)
    assert states[result.source_id][0] == "succeeded", states
    with psycopg.connect(services.db.url) as conn:
        key, attempts = conn.execute(
            "SELECT a.key, (SELECT max(attempts) FROM jobs WHERE source_id = %s) FROM artifacts a"
            " WHERE a.source_id = %s AND a.stage = 'redact'",
            (result.source_id, result.source_id)).fetchone()  # type: ignore[misc]
    assert attempts >= 2
    from infra.objectstore import get_bytes
    output = get_bytes(client_for("operator", services), services.s3.bucket_redacted, key)
    after, before = decode_video(output), decode_video(path.read_bytes())
    assert after.indices == list(range(spec.frames)) and after.times == before.times
    assert object_exists(client_for("admin", services), services.s3.bucket_redacted, key)


def _states(settings: Settings, source_id: object) -> list[str]:
    with psycopg.connect(settings.db.url) as conn:
        return [r[0] for r in conn.execute("SELECT state FROM jobs WHERE source_id = %s",
                                           (source_id,))]


def test_veil_redact_handles_videos_in_process(policies_env: dict[str, str],
                                               tmp_path: Path) -> None:
    spec = VideoSpec(frames=24, rotation=270, seed=61)
    path = write(tmp_path / "clip.mov", spec)  # the name's extension does not matter
    run = veil("redact", str(path), "-o", str(tmp_path / "out"), "--policy", "video-test",
               "--json", env=policies_env)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["files"][0]["guard"] == "passed"  # frame 0 checked, clean
    output = (tmp_path / "out" / "clip.mp4").read_bytes()
    before, after = decode_video(path.read_bytes(), True), decode_video(output, True)
    assert after.indices == list(range(spec.frames)) and after.times == before.times
    assert after.size == (spec.width, spec.height)
    assert all(face_destroyed(a, b, face_core(i, spec.width, spec.height))
               for i, (a, b) in enumerate(zip(before.frames, after.frames, strict=True)))


def test_veil_redact_keeps_audio_in_sync_in_process_too(policies_env: dict[str, str],
                                                        tmp_path: Path) -> None:
    # the file is read where it lies: chunks and the audio re-mux each open it themselves
    path = write(tmp_path / "talk.mp4", VideoSpec(frames=30, audio=True, seed=62))
    run = veil("redact", str(path), "-o", str(tmp_path / "out"), "--policy", "video-keep-audio",
               env=policies_env)
    assert run.returncode == 0, run.stderr
    output = (tmp_path / "out" / "talk.mp4").read_bytes()
    assert _audio_times(output) == _audio_times(path.read_bytes())
    assert decode_video(output).indices == list(range(30))
