"""The hostile corpus (``tests.hostile``) through `veil redact` and through `veil ingest` plus a
real Celery worker, Redis, PostgreSQL and S3: every file ends as a success with every frame's
face destroyed, in its own kind, or as a failure with a reason; no error, audit row or log line
repeats a byte of the input; the worker survives all of it."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageSequence

from infra.objectstore import client_for, get_bytes
from infra.settings import Settings
from producer.scanning import display_name
from schemas.media import sniff
from tests.conftest import REPO, start_worker, stop_worker
from tests.hostile import LIMIT, Case, secrets_in, write_corpus
from tests.videos import face_destroyed

VEIL = str(Path(sys.executable).parent / "veil")
# A queue prefix of its own: a session worker (40 MP limit) must not take these jobs.
ENV = {"VEIL_LIMITS__MAX_IMAGE_PIXELS": str(LIMIT),
       "VEIL_BROKER__QUEUE_PREFIX": os.environ["VEIL_BROKER__QUEUE_PREFIX"] + "-hostile"}


def veil(*args: str, cwd: Path | None = None, timeout: float = 300
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VEIL, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **ENV}, cwd=cwd, errors="surrogateescape")


def output_frames(data: bytes, ext: str) -> list[NDArray[np.uint8]]:
    """Every frame of an output file, BGR, as a viewer decodes it."""
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format or "").lower() in {"jpg": ("jpeg",), "png": ("png",),
                                                "gif": ("gif",), "tif": ("tiff",),
                                                "webp": ("webp",)}[ext]
        return [np.ascontiguousarray(np.asarray(f.convert("RGB"))[:, :, ::-1])
                for f in ImageSequence.Iterator(image)]


def assert_redacted(case: Case, data: bytes, ext: str) -> None:
    """The output is in the expected kind, holds every frame, and no face survived."""
    assert ext == case.ext, case.name
    found = output_frames(data, ext)
    assert len(found) == case.frames, f"{case.name}: {len(found)} frames of {case.frames}"
    for (original, box), frame in zip(case.faces, found, strict=False):
        assert face_destroyed(original, frame, box), f"{case.name}: a face survived"


@pytest.fixture()
def corpus(tmp_path: Path, unique_seed: int) -> tuple[Path, list[Case]]:
    folder = tmp_path / "corpus"
    return folder, write_corpus(folder, tmp_path / "outside-secret.txt", unique_seed % 100_000)


def test_corpus_through_veil_redact(corpus: tuple[Path, list[Case]], tmp_path: Path) -> None:
    # given the corpus folder, when `veil redact` runs over it
    folder, cases = corpus
    run = veil("redact", "-j", "1", "--json", str(folder), "-o", str(tmp_path / "out"))
    assert run.returncode == 1, run.stderr[-2000:]  # some failed: exit 1, not a crash
    assert "Traceback" not in run.stderr
    report = json.loads(run.stdout)
    results = {Path(f["input"]).name: f for f in report["files"]}
    skipped = {Path(p).name for p in report["skipped"]}
    # then every case has a result, as expected; under a folder, files that are no media by
    # content (empty, text, noise) are listed as skipped, by name
    assert sorted([*results, *skipped]) == sorted(c.name for c in cases)
    assert all(sniff(c.data or b"x") is None for c in cases if c.name in skipped)
    for case in cases:
        if case.name in skipped:
            assert not case.ok
            continue
        result = results[case.name]
        if case.either and result["error"] is None:
            continue
        if not case.ok:
            assert result["output"] is None, case.name
            assert re.search(case.reason, result["error"] or ""), (case.name, result["error"])
            assert not secrets_in(result["error"]), (case.name, result["error"])
            continue
        assert result["error"] is None, (case.name, result["error"])
        output = Path(result["output"])
        assert len(os.fsencode(output.name)) <= 255
        assert_redacted(case, output.read_bytes(), output.suffix[1:])
    # and nothing half-written is left behind
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".partial")]


def test_redact_text_output_escapes_names_and_takes_dash_names(
        corpus: tuple[Path, list[Case]], tmp_path: Path) -> None:
    folder, cases = corpus
    # given a name with a newline and an escape sequence, when the text output lists it
    names = ["line\nbreak\x1b[31m.jpg", "plain.jpg"]
    run = veil("redact", "-j", "1", *(str(folder / n) for n in names), "-o",
               str(tmp_path / "text"))
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    # then each file is one line (no forged line) and the control characters are escapes
    assert len(lines) == len(names) + 1
    assert "line\\nbreak\\x1b[31m.jpg -> " in lines[0] and "\x1b" not in run.stdout
    # when a name starts with "-", given after "--" or as ./NAME
    for args in (["--", "-starts-with-dash.jpg"], ["./-starts-with-dash.jpg"]):
        dashed = veil("redact", "-j", "1", "-o", str(tmp_path / "dash"), *args, cwd=folder)
        # then it is a file, not an option
        assert dashed.returncode == 0, dashed.stderr[-2000:]
        assert (tmp_path / "dash" / "-starts-with-dash.jpg").is_file()


@pytest.fixture()
def hostile_worker(clean_ledger: Settings) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A real worker on the corpus's own queues and pixel limit; yields it and its log."""
    log = REPO / ".state" / "test-worker.log"  # start_worker appends to it
    log.parent.mkdir(exist_ok=True)
    log.touch()
    proc = start_worker(extra_env=ENV)
    time.sleep(1.0)
    assert proc.poll() is None, "the worker exited at start; see .state/test-worker.log"
    yield proc, log
    stop_worker(proc)


def test_corpus_through_ingest_and_a_worker(
        corpus: tuple[Path, list[Case]], hostile_worker: tuple[subprocess.Popen[bytes], Path],
        clean_ledger: Settings) -> None:
    folder, cases = corpus
    worker, log = hostile_worker
    log_start = log.stat().st_size
    # the empty file is the one that cannot be made this run's own: its raw key is shared with
    # every other run, whose clean-up may delete it under this one (ingesting an empty file is
    # covered by test_pipeline_e2e; here it goes through veil redact)
    for case in [c for c in cases if c.data == b""]:
        (folder / case.name).unlink()
        cases.remove(case)
    # given the corpus folder, when it is ingested and waited for
    run = veil("ingest", str(folder), "--wait", "--json", "--timeout", "240")
    assert run.returncode == 1, run.stderr[-2000:]  # some failed: exit 1, not a crash
    assert "Traceback" not in run.stderr
    sources = {s["file"]: s for s in json.loads(run.stdout)["sources"]}
    assert sorted(sources) == sorted(display_name(c.name) for c in cases)
    with psycopg.connect(clean_ledger.db.url) as conn:
        outputs = dict(conn.execute("SELECT source_id::text, bucket || '/' || key FROM artifacts"
                                    ).fetchall())
        errors = [e for (e,) in conn.execute("SELECT error FROM jobs WHERE error IS NOT NULL")]
        audit = [row for (row,) in conn.execute(
            "SELECT concat_ws(' ', action, bucket, key, detail::text) FROM audit_events")]
    s3 = client_for("admin", clean_ledger)
    plain = sources["plain.jpg"]["source_id"]
    # then each file ended as expected
    for case in cases:
        source = sources[display_name(case.name)]
        if case.link_to and case.ok:  # the same bytes as its target: one source
            assert source["source_id"] == plain
        if case.either and source["state"] == "succeeded":
            continue
        if not case.ok:
            assert source["state"] in ("failed", "rejected"), (case.name, source)
            assert re.search(case.reason, source["error"] or ""), (case.name, source["error"])
            continue
        # a duplicate (a link and its target, one of them reported first) tells the state it
        # had when it was ingested; its output is checked all the same
        assert source["duplicate"] or source["state"] == "succeeded", (case.name, source)
        bucket, key = outputs[source["source_id"]].split("/", 1)
        assert_redacted(case, get_bytes(s3, bucket, key), key.rsplit(".", 1)[1])
    # and no error, audit row or worker log line repeats the text files' content
    assert not [e for e in errors if secrets_in(e)]
    assert not [a for a in audit if secrets_in(a)]
    assert not secrets_in(log.read_bytes()[log_start:].decode("utf-8", "replace"))
    # and the worker went through all of it
    assert worker.poll() is None


def test_ingest_text_output_escapes_names(corpus: tuple[Path, list[Case]],
                                          clean_ledger: Settings) -> None:
    folder, _ = corpus
    # given a name with a newline, and a link out of the folder, when ingested in text mode
    run = veil("ingest", str(folder / "line\nbreak\x1b[31m.jpg"), str(folder / "link-out.jpg"))
    # then each is one line, escaped; the link named directly is the user's choice: read
    lines = run.stdout.splitlines()
    assert len(lines) == 3 and "line\\nbreak\\x1b[31m.jpg" in lines[0], run.stdout
    assert "\x1b" not in run.stdout
    # when the folder is ingested, the link out of it is refused, never read
    refused = veil("ingest", str(folder), "--json")
    link = next(s for s in json.loads(refused.stdout)["sources"] if s["file"] == "link-out.jpg")
    assert link["state"] == "rejected" and link["source_id"] is None
    assert "symbolic link to a target outside the folder" in link["error"]
    # and the command prints no traceback for any of it
    assert "Traceback" not in refused.stderr
    # when a name starting with "-" is given after "--", it is a file, not an option
    dashed = veil("ingest", "--json", "--", "-starts-with-dash.jpg", cwd=folder)
    assert dashed.returncode == 0, dashed.stderr[-2000:]
    assert json.loads(dashed.stdout)["sources"][0]["file"] == "-starts-with-dash.jpg"
