"""`veil status` lists stalled jobs with their age, in text and JSON, against the real ledger:
a running job whose lease expired (its worker is presumed lost) and a queued job that waited
longer than ``requeue_after_s``; a stall older than two sweeps is shouted on stderr."""

from __future__ import annotations

import json
from pathlib import Path

from infra.settings import Settings
from tests.conftest import face_image, jpeg_bytes
from tests.rights import execute, ingest_file, veil


def test_status_lists_stalled_jobs_with_their_age(clean_ledger: Settings, tmp_path: Path,
                                                  unique_seed: int) -> None:
    # given a job whose worker vanished 200 s ago and one queued for two hours
    lost, waiting, fresh = (ingest_file(clean_ledger, _image(tmp_path, unique_seed + i, name))
                            for i, name in enumerate(("lost.jpg", "waiting.jpg", "fresh.jpg")))
    execute(clean_ledger, "UPDATE jobs SET state = 'running', attempts = 1, worker = 'w@h:1',"
            " started_at = now() - interval '300 s',"
            " lease_expires_at = now() - interval '200 s' WHERE id = %s", lost.job_id)
    execute(clean_ledger, "UPDATE jobs SET enqueued_at = now() - interval '2 hours'"
            " WHERE id = %s", waiting.job_id)
    # when the operator asks for the status
    data = json.loads(veil("status", "--json").stdout)
    text = veil("status")
    # then both are listed, oldest stall first, with why and for how long; the fresh one is not
    stalled = data["stalled"]
    assert [(s["job_id"], s["why"]) for s in stalled] == [
        (str(waiting.job_id), "queued too long"), (str(lost.job_id), "lease expired")]
    assert 195 <= stalled[1]["stalled_s"] < 260 and stalled[1]["age_s"] >= 295
    assert str(fresh.job_id) not in text.stdout
    assert (f"stalled image    job {lost.job_id}  source {lost.source_id}  lease expired 3m"
            in text.stdout)
    # (the queued job stalled when its allowed wait, requeue_after_s = 30 min, ran out)
    assert f"job {waiting.job_id}  source {waiting.source_id}  queued too long 1h30m" \
        in text.stdout
    assert "stalled for longer than two sweeps" in text.stderr and text.returncode == 0


def _image(tmp_path: Path, seed: int, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(jpeg_bytes(face_image(seed, size=64)))
    return path
