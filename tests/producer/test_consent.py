"""Consent through the real stack: a consent-based policy refuses an ingest without a live
consent, links each source to it, and withdrawing it erases those sources as `veil erase` does
and refuses later ingests naming it."""

from __future__ import annotations

import json
from pathlib import Path

from infra.objectstore import client_for
from infra.settings import Settings
from tests.conftest import face_image, jpeg_bytes
from tests.rights import rows, source_versions, veil


def test_policy_list_shows_purpose_and_legal_basis() -> None:
    # when the policies are listed, in text and JSON
    text = veil("policy", "list")
    data = json.loads(veil("policy", "list", "--json").stdout)
    # then each shows why, on what ground, and why its retention is what it is
    assert text.returncode == 0, text.stderr
    assert "legal basis: Art. 6(1)(f) legitimate interests" in text.stdout
    assert "legal basis: Art. 6(1)(a) consent (ingest needs --consent REF)" in text.stdout
    assert data["research"]["legal_basis"]["art6"] == "consent"
    assert data["research"]["needs_consent"] is True
    assert data["street"]["legal_basis_text"] == "Art. 6(1)(f) legitimate interests"
    assert all(p["purpose"] and p["retention_rationale"] for p in data.values())


def test_consent_ingest_then_withdrawal_erases_and_refuses(
        clean_ledger: Settings, worker: object, tmp_path: Path, unique_seed: int) -> None:
    settings = clean_ledger
    ref = f"P-{unique_seed}"
    clips = tmp_path / "study"
    clips.mkdir()
    for n in range(2):
        (clips / f"p{n}.jpg").write_bytes(jpeg_bytes(face_image(unique_seed + n)))

    # given a research ingest without a consent: refused, nothing stored
    refused = veil("ingest", str(clips), "--policy", "research", "--json")
    assert refused.returncode == 2, refused.stdout
    assert "relies on consent" in refused.stderr and "--consent REF" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert rows(settings, "SELECT id FROM sources") == []
    # and one naming a consent not on record
    unknown = veil("ingest", str(clips), "--policy", "research", "--consent", ref)
    assert unknown.returncode == 2 and f"consent {ref} is not on record" in unknown.stderr

    # when the consent is recorded and the recordings are ingested under it
    added = veil("consent", "add", ref, "--subject", "participant-17", "--scope", "study 7",
                 "--wording-version", "v3", "--expires", "2099-01-01", "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["wording_version"] == "v3"
    assert veil("consent", "add", ref).returncode == 2  # a reference is never reused
    run = veil("ingest", str(clips), "--policy", "research", "--consent", ref, "--wait",
               "--json", "--timeout", "120")
    assert run.returncode == 0, run.stdout + run.stderr
    ids = [s["source_id"] for s in json.loads(run.stdout)["sources"]]

    # then each source is linked to the consent, with the policy's purpose and basis
    linked = rows(settings, "SELECT id::text, consent_ref, legal_basis, purpose, raw_key"
                  " FROM sources ORDER BY id")
    assert {r["id"] for r in linked} == set(ids)
    assert {r["consent_ref"] for r in linked} == {ref}
    assert {r["legal_basis"] for r in linked} == {"Art. 6(1)(a) consent"}
    assert all(r["purpose"].startswith("Research") for r in linked)
    listed = veil("consent", "list")
    assert f"{ref}" in listed.stdout and "sources 2 (0 erased)" in listed.stdout

    # when the subject withdraws
    withdrawn = veil("consent", "withdraw", ref, "--reason", "e-mail of 1 May",
                     "--received", "2026-01-01T00:00:00Z")
    assert withdrawn.returncode == 0, withdrawn.stderr
    assert "2 sources erased" in withdrawn.stdout

    # then every linked source is erased as `veil erase` does: tombstone, no object left,
    # receipts on the deletion tasks, an erase audit event naming the consent
    s3 = client_for("admin", settings)
    for r in linked:
        assert source_versions(s3, settings, r["id"], r["raw_key"]) == []
    tombs = rows(settings, "SELECT original_name, camera, erased_at FROM sources")
    assert all(t["erased_at"] and t["original_name"] == "erased" for t in tombs)
    erased = rows(settings, "SELECT source_id::text AS sid, detail FROM audit_events"
                  " WHERE action = 'erase'")
    assert {e["sid"] for e in erased} >= set(ids)
    assert all(f"consent {ref} withdrawn" in e["detail"]["reason"] for e in erased
               if e["sid"] in ids)
    assert rows(settings, "SELECT count(*) AS n FROM deletion_tasks WHERE receipt IS NOT NULL"
                " AND source_id = ANY(%s::uuid[])", ids)[0]["n"] >= 4  # raw + output each
    # and the consent row keeps its times, its wording version and the withdrawal
    row = rows(settings, "SELECT * FROM consents WHERE ref = %s", ref)[0]
    assert row["given_at"] and row["withdrawn_at"] and row["wording_version"] == "v3"
    assert row["withdrawal_reason"] == "e-mail of 1 May" and row["subject"] == "participant-17"
    listed = json.loads(veil("consent", "list", "--json").stdout)
    assert [c["sources_erased"] for c in listed if c["ref"] == ref] == [2]
    assert veil("consent", "list", "--active", "--json").stdout.strip() == "[]"

    # and a later ingest naming the consent is refused
    (tmp_path / "new.jpg").write_bytes(jpeg_bytes(face_image(unique_seed + 9)))
    again = veil("ingest", str(tmp_path / "new.jpg"), "--policy", "research", "--consent", ref)
    assert again.returncode == 2 and "was withdrawn" in again.stderr
    # and naming a consent under a policy that does not rely on consent is refused too
    other = veil("ingest", str(tmp_path / "new.jpg"), "--policy", "default", "--consent", ref)
    assert other.returncode == 2 and "not consent" in other.stderr
