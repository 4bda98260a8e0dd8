"""A large inbox video is streamed to `raw`: spooled to a temporary file while hashed, then
encrypted from the file segment by segment. Measured in a subprocess of its own: its peak RSS
grows by far less than the object's size, and the raw copy decrypts to the uploaded bytes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

from infra import db, keyring
from infra.objectstore import client_for
from tests.conftest import REPO
from tests.watching import Inbox, inbox_rows, sources

SIZE = 50 * 1024 * 1024

MEASURE = textwrap.dedent("""
    import json, resource, sys
    from infra.broker import make_celery
    from infra.objectstore import client_for
    from infra.settings import get_settings
    from producer.cameras import CameraBook
    from producer.watch_inbox import handle_object, list_inbox

    def rss_kb(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1])

    settings = get_settings()
    client = client_for("producer", settings)
    [obj] = list(list_inbox(client, settings.s3.bucket_inbox, settings.watch.prefix))
    app, book = make_celery(settings, name="veil-test"), CameraBook(settings)
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak to the current RSS
    before = rss_kb("VmRSS:")
    handled = handle_object(obj, settings, app, book, client)
    print(json.dumps({"outcome": handled.outcome, "before_kb": before,
                      "peak_kb": rss_kb("VmHWM:"), "state": handled.result.state}))
""")


def test_a_50_mb_video_goes_to_raw_without_being_held_in_memory(inbox: Inbox) -> None:
    # given a 50 MB upload that is an MP4 by its header (not one Veil can decode: the test is
    # about the path of its bytes, and a failed probe still stores the original)
    head = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
    data = head + os.urandom(SIZE - len(head))
    inbox.put("gate/long.mp4", data)
    # when the watcher's object handler ingests it in a process of its own
    run = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True,
                         timeout=300, cwd=REPO, env={**os.environ, **inbox.env})
    assert run.returncode == 0, run.stderr
    measured = json.loads(run.stdout.strip().splitlines()[-1])
    growth_mb = (measured["peak_kb"] - measured["before_kb"]) / 1024
    print(f"peak RSS growth for a {SIZE // 2**20} MB object: {growth_mb:.1f} MB")
    # then its peak RSS grew by well under the object's size (a whole copy would be 50 MB,
    # the old path two: plaintext and ciphertext)
    assert measured["outcome"] == "ingested"
    assert growth_mb < SIZE / 2**20 / 2, measured
    # and the raw copy holds exactly the uploaded bytes, and the inbox is empty
    [source] = sources(inbox.settings)
    assert source["size_bytes"] == SIZE and source["sha256"] == hashlib.sha256(data).hexdigest()
    row = _raw(inbox, source["id"])
    with db.connect(inbox.settings) as conn:
        data_key = keyring.load_key(conn, source["id"])
    reader = keyring.RawReader(client_for("worker", inbox.settings), data_key,
                               keyring.RawObject(source["id"], row["raw_bucket"],
                                                 row["raw_key"], row["raw_version_id"]),
                               max_bytes=SIZE)
    digest = hashlib.sha256()
    while chunk := reader.read(4 * 1024 * 1024):
        digest.update(chunk)
    assert digest.hexdigest() == source["sha256"]
    assert inbox.emptied() == [] and [r["outcome"] for r in inbox_rows(inbox.settings)] == [
        "ingested"]


def _raw(inbox: Inbox, source_id: object) -> dict[str, object]:
    from tests.rights import rows
    return rows(inbox.settings, "SELECT raw_bucket, raw_key, raw_version_id FROM sources"
                " WHERE id = %s", source_id)[0]
