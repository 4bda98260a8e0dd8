"""`veil review` lists the sources whose detections were uncertain and records reviews, against
the real PostgreSQL and S3 (the image job writes the rows, as in production)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from infra.objectstore import client_for
from infra.settings import Settings
from producer.cli import main
from producer.ingest import IngestOptions, _file_input, _ingest_one
from schemas.policy import Policy, ReviewBand
from tests.conftest import face_image, jpeg_bytes
from workers.detectors.base import Detector


@pytest.fixture(scope="module")
def face_detector() -> Detector:
    from infra.settings import ModelSettings
    from workers.detectors.registry import build_configured_detector

    return build_configured_detector(ModelSettings(provider="cpu", detectors=["centerface"]))


def _process(path: Path, policy: Policy, settings: Settings, detector: Detector) -> uuid.UUID:
    """Ingest ``path`` under ``policy`` and run its image job in this process."""
    from workers.image_job import process_image_job

    result, _ = _ingest_one(_file_input(path), IngestOptions(policy), settings,
                            client_for("producer", settings))
    assert process_image_job(result.job_id, settings, detector, "test") == "succeeded"
    return uuid.UUID(str(result.source_id))


def _review(*args: str) -> tuple[int, str]:
    outcome = CliRunner().invoke(main, ["review", *args])
    return outcome.exit_code, outcome.output


def test_uncertain_sources_are_listed_until_reviewed(
        clean_ledger: Settings, face_detector: Detector, tmp_path: Path,
        unique_seed: int) -> None:
    # given one image whose face scores fall in the review band, and one where none do
    unsure = Policy(name="unsure", raw_retention_s=3600,
                    review={"face": ReviewBand(low=0.0, high=1.0)})
    sure = Policy(name="sure", raw_retention_s=3600, review={})
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(face_image(unique_seed)))
    (tmp_path / "b.jpg").write_bytes(jpeg_bytes(face_image(unique_seed + 1)))
    flagged = _process(tmp_path / "a.jpg", unsure, clean_ledger, face_detector)
    _process(tmp_path / "b.jpg", sure, clean_ledger, face_detector)
    # then the ledger marks the detections, and `veil review` lists only the first source
    with psycopg.connect(clean_ledger.db.url) as conn:
        marks = conn.execute("SELECT s.policy_name, d.uncertain FROM detections d JOIN jobs j"
                             " ON j.id = d.job_id JOIN sources s ON s.id = j.source_id").fetchall()
        guard = conn.execute("SELECT params->'guard' FROM artifacts").fetchall()
    assert {p for p, u in marks if u} == {"unsure"} and any(p == "sure" for p, _ in marks)
    assert all(g[0]["action"] in ("passed", "reredacted") for g in guard)
    code, output = _review("--json")
    assert code == 0, output
    rows = json.loads(output)
    assert [r["source_id"] for r in rows] == [str(flagged)]
    assert rows[0]["classes"] == ["face"] and rows[0]["uncertain"] >= 1
    assert rows[0]["original_name"] == "a.jpg"
    code, output = _review()
    assert code == 0 and str(flagged) in output and "a.jpg" in output
    # when a person records the review, the source leaves the list (and --all still shows it)
    code, output = _review("--done", str(flagged), "--note", "checked", "--by", "reviewer-1")
    assert code == 0 and f"reviewed {flagged}" in output
    assert json.loads(_review("--json")[1]) == []
    assert _review()[1].strip() == "nothing to review"
    everything = json.loads(_review("--all", "--json")[1])
    assert [r["source_id"] for r in everything] == [str(flagged)]
    assert everything[0]["reviewed_at"] is not None
    with psycopg.connect(clean_ledger.db.url) as conn:
        stored = conn.execute("SELECT reviewed_by, note FROM reviews").fetchall()
    assert stored == [("reviewer-1", "checked")]


def test_reviewing_an_unknown_or_malformed_id_is_a_clear_error(
        clean_ledger: Settings) -> None:
    missing = uuid.uuid4()
    code, output = _review("--done", str(missing))
    assert code == 1 and f"no source {missing}" in output
    code, output = _review("--done", "not-a-uuid")
    assert code == 2 and "not a source id" in output
