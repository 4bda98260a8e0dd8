"""Pure contracts: keys, idempotency ids, task arguments, policies, media sniffing."""

from __future__ import annotations

import uuid

import pytest

from infra.policies import load_policies
from infra.settings import Settings
from schemas import keys, messages
from schemas.media import sniff
from schemas.policy import parse_duration, parse_policies

SHA = "ab" * 32


def test_keys_are_deterministic_and_carry_no_names() -> None:
    assert keys.raw_key(SHA, "JPG") == f"sha256/ab/{SHA}.jpg"
    sid = keys.source_id_for(SHA)
    assert sid == keys.source_id_for(SHA)
    assert keys.job_id_for(sid, "image") == keys.job_id_for(sid, "image")
    assert keys.job_id_for(sid, "chunk", 1) != keys.job_id_for(sid, "chunk", 2)
    assert keys.redacted_key(sid, "png") == f"sources/{sid}/redacted.png"
    with pytest.raises(ValueError):
        keys.raw_key("not-a-hash", "jpg")
    with pytest.raises(ValueError):
        keys.redacted_key(sid, "../etc")


def test_task_arguments_are_ids_only() -> None:
    job = uuid.uuid4()
    assert messages.job_task_args(job) == [str(job)]
    with pytest.raises(ValueError):
        messages.job_task_args("holiday-photo.jpg")
    batch = [uuid.uuid4(), uuid.uuid4()]
    assert messages.job_batch_args(batch) == [str(j) for j in batch]
    with pytest.raises(ValueError):  # one file name among ids spoils the whole message
        messages.job_batch_args([batch[0], "holiday-photo.jpg"])


@pytest.mark.parametrize(("text", "seconds"), [("30d", 2592000), ("12h", 43200), ("10s", 10),
                                               ("90m", 5400), ("2w", 1209600), (45, 45)])
def test_durations(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "0s", "-5d", "10y", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_shipped_policies_parse_and_default_keeps_raw_30_days() -> None:
    policies = load_policies(Settings())
    assert policies["default"].raw_retention_s == 30 * 86400
    assert policies["default"].redaction.method == "blur"
    assert policies["research"].redacted_retention_s is None
    assert not policies["default"].redaction.weak


def test_policy_file_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="no \\[policies.NAME\\]"):
        parse_policies("")
    with pytest.raises(ValueError, match="not a duration"):
        parse_policies('[policies.x]\nraw_retention_s = "forever"')


@pytest.mark.parametrize(("head", "expected"), [
    (b"\xff\xd8\xff\xe0" + b"\0" * 40, ("image", "jpeg")),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, ("image", "png")),
    (b"RIFF\0\0\0\0WEBPVP8 " + b"\0" * 40, ("image", "webp")),
    (b"\0\0\0\x20ftypisom" + b"\0" * 40, ("video", "mp4")),
    (b"\x1a\x45\xdf\xa3" + b"\0" * 40, ("video", "mkv")),
    (b"", None), (b"hello world, not media", None),
])
def test_sniff_by_content(head: bytes, expected: tuple[str, str] | None) -> None:
    assert sniff(head) == expected


def test_every_shipped_policy_declares_purpose_basis_and_retention_rationale() -> None:
    # given the policies file that ships
    from infra.policies import load_policies
    policies = load_policies()
    # then each says why, on what ground and why that long; CCTV on legitimate interests,
    # research on consent (so its ingests need a consent record)
    for policy in policies.values():
        assert policy.purpose and policy.retention_rationale and policy.legal_basis, policy.name
    assert policies["default"].legal_basis_text == "Art. 6(1)(f) legitimate interests"
    assert policies["street"].legal_basis_text == "Art. 6(1)(f) legitimate interests"
    assert policies["research"].needs_consent
    assert not policies["default"].needs_consent


def test_a_policy_without_legal_basis_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="policy 'x' does not declare purpose, legal_basis"):
        parse_policies('[policies.x]\nraw_retention_s = "1d"')
    with pytest.raises(ValueError, match="art6"):
        parse_policies('[policies.x]\nraw_retention_s = "1d"\npurpose = "p"\n'
                       'retention_rationale = "r"\n'
                       'legal_basis = { art6 = "because", detail = "d" }')
