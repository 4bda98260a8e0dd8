"""`veil report` from a ledger with real data (ingest, a real worker, an access request, an
erasure, a consent withdrawal, a legal hold), opened in headless Chromium (Debian's package
`chromium`): every section renders, every policy's legal basis is named, the plots load."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infra.settings import Settings
from tests.conftest import face_image, jpeg_bytes
from tests.rights import execute, rows, veil

SECTIONS = ["policies", "recordings", "quality", "guard", "deletions", "rights", "holds",
            "raw-access"]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("headless Chromium is needed: apt-get install -y chromium")
    return found


def test_report_renders_every_section_from_real_data(
        clean_ledger: Settings, worker: object, tmp_path: Path, unique_seed: int) -> None:
    # the period starts now: audit events of earlier tests stay (they are append-only)
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    # given recordings of two cameras redacted by a real worker
    for n, camera in enumerate(("gate", "gate", "yard")):
        path = tmp_path / f"{camera}{n}.jpg"
        path.write_bytes(jpeg_bytes(face_image(unique_seed + n)))
        run = veil("ingest", str(path), "--camera", camera, "--captured-at",
                   "2024-05-01T08:00:00", "--wait", "--json", "--timeout", "120")
        assert run.returncode == 0, run.stderr
        if n == 0:
            gate = json.loads(run.stdout)["sources"][0]["source_id"]
    # and an access request answered a day after it came in, an erasure, a legal hold
    assert veil("dsar", "--camera", "gate", "--from", "2024-05-01", "--to", "2024-05-02",
                "-o", str(tmp_path / "a.zip"), "--received",
                "2020-01-01T00:00:00Z").returncode == 0
    # and a consent-based recording whose consent is withdrawn
    ref = f"R-{unique_seed}"
    assert veil("consent", "add", ref, "--wording-version", "v1").returncode == 0
    (tmp_path / "r.jpg").write_bytes(jpeg_bytes(face_image(unique_seed + 7)))
    assert veil("ingest", str(tmp_path / "r.jpg"), "--policy", "research", "--consent", ref,
                "--wait", "--timeout", "120").returncode == 0
    assert veil("consent", "withdraw", ref, "--reason", "asked").returncode == 0
    assert veil("hold", "set", gate, "--reason", "case 9").returncode == 0
    # and one raw original purged on time, one output whose deletion is two days overdue
    yard = rows(clean_ledger, "SELECT id::text FROM sources WHERE camera = 'yard'")[0]["id"]
    execute(clean_ledger, "UPDATE deletion_tasks SET due_at = now() - interval '1 second'"
            " WHERE source_id = %s AND bucket = %s", yard, clean_ledger.s3.bucket_raw)
    assert veil("purge", "--now").returncode == 0
    execute(clean_ledger, "UPDATE deletion_tasks SET due_at = now() - interval '2 days'"
            " WHERE source_id = %s AND bucket = %s", yard, clean_ledger.s3.bucket_redacted)

    # when the report is generated
    out = tmp_path / "report.html"
    run = veil("report", "--from", since, "--to", "2100-01-01", "-o", str(out), "--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    text = veil("report", "--from", since, "--to", "2100-01-01", "-o", str(out))
    assert text.returncode == 0 and "1 erasures" in text.stdout, text.stdout

    # then its data are the ledger's
    assert {r["camera"] for r in data["recordings"]} >= {"gate", "yard", "(erased)"}
    assert data["withdrawals"]["count"] == 1 and data["erasures"]["count"] == 1
    assert data["access_requests"]["count"] == 1
    assert data["access_requests"]["worst_response_s"] > 86400 * 365  # received in 2020
    assert [h["source_id"] for h in data["holds"]] == [gate]
    assert {r["actor"] for r in data["raw_access"]} == {"worker"}
    assert data["quality"]["figures"][0]["data_set"] == "faces-dev"
    deletions = data["deletions"]
    assert deletions["on_time"] >= 1 and deletions["overdue"] == 1, deletions
    assert data["deletions"]["worst_delay_s"] >= 2 * 86400

    # and headless Chromium renders every section, names every policy's legal basis and
    # loads the embedded plots
    dom = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                          "--dump-dom", out.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    for section in SECTIONS:
        assert re.search(rf'<section id="{section}">\s*<h2>', dom), section
    policies = json.loads(veil("policy", "list", "--json").stdout)
    cells = re.findall(r'<td class="legal-basis"><b>([^<]+)</b>', dom)
    assert sorted(cells) == sorted(p["legal_basis_text"] for p in policies.values())
    assert dom.count('src="data:image/png;base64,') >= 3
    assert "Traceback" not in dom and "faces-dev" in dom
