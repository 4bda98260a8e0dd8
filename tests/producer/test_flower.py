"""Flower against the real broker: tasks appear under clear names with ids as arguments, never
file names (invariant 5), behind basic auth, with Prometheus metrics."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.settings import Settings
from tests.conftest import REPO, face_image, jpeg_bytes, stop_worker

PORT = 15555


def _get(path: str, auth: bool = True) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}")
    if auth:
        token = base64.b64encode(b"veil:veil-dev-secret-change-me").decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


@pytest.fixture(scope="module")
def flower(services: Settings) -> Iterator[None]:
    log = open(REPO / ".state" / "test-flower.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen([str(Path(sys.executable).parent / "veil"), "flower", "--port",
                             str(PORT)], stdout=log, stderr=log, start_new_session=True, cwd=REPO)
    deadline = time.monotonic() + 30
    while True:
        try:
            if _get("/healthcheck", auth=False)[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "Flower did not start; see .state/test-flower.log"
        time.sleep(0.5)
    yield
    stop_worker(proc)


def test_flower_shows_tasks_by_name_with_ids_only(clean_ledger: Settings, worker: object,
                                                  flower: None, tmp_path: Path,
                                                  unique_seed: int) -> None:
    secret_name = "jane-roe-at-home.jpg"
    (tmp_path / secret_name).write_bytes(jpeg_bytes(face_image(unique_seed)))
    run = subprocess.run([str(Path(sys.executable).parent / "veil"), "ingest", str(tmp_path),
                          "--wait", "--json"], capture_output=True, text=True, timeout=120)
    job_source = json.loads(run.stdout)["sources"][0]
    assert job_source["state"] == "succeeded"
    # Flower learns of tasks from events; give it a moment
    deadline = time.monotonic() + 20
    tasks: dict[str, dict[str, object]] = {}
    while time.monotonic() < deadline:
        status, body = _get("/api/tasks")
        assert status == 200
        tasks = {k: v for k, v in json.loads(body).items() if v.get("name") == "veil.redact_image"}
        if any(v.get("state") == "SUCCESS" for v in tasks.values()):
            break
        time.sleep(0.5)
    assert tasks, "Flower never saw a veil.redact_image task"
    for task in tasks.values():
        assert re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                         str(task["args"]))
        assert task.get("kwargs") in ("{}", {}, None)
    assert secret_name not in body and "jane-roe" not in body
    metrics_status, metrics = _get("/metrics")
    assert metrics_status == 200 and "flower_events_total" in metrics
    assert "jane-roe" not in metrics


def test_flower_requires_basic_auth(flower: None) -> None:
    assert _get("/api/tasks", auth=False)[0] == 401


def test_flower_login_cannot_send_tasks(flower: None) -> None:
    # given the Flower login, when it asks Flower to start an erasure or a purge
    for task in ("veil.erase", "veil.purge"):
        request = urllib.request.Request(
            f"http://127.0.0.1:{PORT}/api/task/async-apply/{task}", method="POST",
            data=json.dumps({"args": ["00000000-0000-0000-0000-000000000000"]}).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Basic "
                     + base64.b64encode(b"veil:veil-dev-secret-change-me").decode()})
        # then Flower refuses: it runs read-only
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 403
