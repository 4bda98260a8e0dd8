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


def ingest(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VEIL, "ingest", url], capture_output=True, text=True, timeout=60,
                          env=os.environ.copy())


@pytest.mark.parametrize(("which", "expected"), [
    ("missing-bucket", "bucket 'veil-no-such-bucket-{u}' does not exist (missing bucket"),
    ("no-permission", "no permission: this S3 identity may not read s3://{redacted}"),
    ("missing-object", "no object at s3://{inbox}/missing-{u}/x.jpg"),
])
def test_s3_errors_say_which(services: Settings, which: str, expected: str) -> None:
    u = uuid.uuid4().hex[:8]
    s3 = services.s3
    url = {"missing-bucket": f"s3://veil-no-such-bucket-{u}/x.jpg",
           "no-permission": f"s3://{s3.bucket_redacted}/x.jpg",  # exists; the producer may not
           "missing-object": f"s3://{s3.bucket_inbox}/missing-{u}/x.jpg"}[which]
    # when the producer is asked to ingest it
    run = ingest(url)
    # then it refuses with the kind of problem, as a usage error, without a traceback
    assert run.returncode == 2, run.stderr
    message = " ".join(run.stderr.split())
    assert expected.format(u=u, redacted=s3.bucket_redacted, inbox=s3.bucket_inbox) in message
    assert "Traceback" not in run.stderr
