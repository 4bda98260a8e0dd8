"""`veil ingest s3://...` against the real S3 server says which problem it met: a missing
bucket, no permission, or a missing object (it said AccessDenied for a missing bucket)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from infra.settings import Settings

VEIL = str(Path(sys.executable).parent / "veil")


def ingest(url: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VEIL, "ingest", url], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


@pytest.mark.parametrize(("which", "expected"), [
    ("missing-bucket", "bucket 'veil-no-such-bucket-{u}' does not exist (missing bucket"),
    # the server hides the buckets an identity has no grant on and answers AccessDenied for
    # them as for missing ones: the message says what this identity can see
    ("no-permission", "the server answered AccessDenied; buckets it can see: {redacted}"),
    ("missing-object", "no object at s3://{inbox}/missing-{u}/x.jpg"),
    ("not-the-inbox", "s3://{redacted}/x.jpg: only the inbox bucket ({inbox}) can be ingested"),
])
def test_s3_errors_say_which(services: Settings, which: str, expected: str) -> None:
    u = uuid.uuid4().hex[:8]
    s3 = services.s3
    # given an inbox that does not exist, a producer holding credentials without a grant on the
    # inbox (the operator's), a key with no object, or a bucket that is not the inbox
    missing = f"veil-no-such-bucket-{u}"
    url, env = {
        "missing-bucket": (f"s3://{missing}/x.jpg", {"VEIL_S3__BUCKET_INBOX": missing}),
        "no-permission": (f"s3://{s3.bucket_inbox}/x.jpg", {
            "VEIL_S3__PRODUCER__ACCESS_KEY": s3.operator.access_key,
            "VEIL_S3__PRODUCER__SECRET_KEY": s3.operator.secret_key.get_secret_value()}),
        "missing-object": (f"s3://{s3.bucket_inbox}/missing-{u}/x.jpg", {}),
        "not-the-inbox": (f"s3://{s3.bucket_redacted}/x.jpg", {}),
    }[which]
    # when the producer is asked to ingest it
    run = ingest(url, env)
    # then it refuses with the kind of problem, as a usage error, without a traceback
    assert run.returncode == 2, run.stderr
    message = " ".join(run.stderr.split())
    assert expected.format(u=u, redacted=s3.bucket_redacted, inbox=s3.bucket_inbox,
                           raw=s3.bucket_raw) in message
    assert "Traceback" not in run.stderr
