"""`veil watch PATH` on an NVR export folder (watchdog): a file is ingested only once it is
complete, temporary names and dotfiles are left alone, and the file is moved or deleted after."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from tests.conftest import face_image, jpeg_bytes
from tests.watching import Inbox, sources


def test_a_slowly_written_export_is_ingested_whole_then_moved(
        inbox: Inbox, tmp_path: Path, unique_seed: int) -> None:
    # given a running folder watcher that wants a file unchanged for 1.5 s
    export, done = tmp_path / "export", tmp_path / "done"
    (export / "gate").mkdir(parents=True)
    proc = inbox.popen("watch", str(export), "--after", f"move:{done}",
                       env={"VEIL_WATCH__STABLE_S": "1.5"})
    try:
        time.sleep(1.0)
        # when an NVR writes a file in pieces, 0.5 s apart, beside a .part file and a dotfile
        data = jpeg_bytes(face_image(unique_seed, size=320))
        (export / "gate" / "clip.jpg.part").write_bytes(b"partial")
        (export / "gate" / ".thumb.jpg").write_bytes(jpeg_bytes(face_image(unique_seed + 1)))
        target = export / "gate" / "a.jpg"
        step = len(data) // 5 + 1
        with target.open("wb") as file:
            for start in range(0, len(data), step):
                file.write(data[start:start + step])
                file.flush()
                assert sources(inbox.settings) == [], "ingested before it was complete"
                time.sleep(0.5)
        # then it is ingested once, whole, with its folder as the camera, and moved
        deadline = time.monotonic() + 60
        while not (done / "gate" / "a.jpg").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (done / "gate" / "a.jpg").read_bytes() == data
        [source] = sources(inbox.settings)
        assert (source["size_bytes"], source["camera"], source["origin"]) == (
            len(data), "gate", "folder")
        assert not target.exists()
        # and the temporary file and the dotfile are untouched
        assert (export / "gate" / "clip.jpg.part").read_bytes() == b"partial"
        assert (export / "gate" / ".thumb.jpg").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_folder_watch_once_deletes_what_it_ingested_and_reports_duplicates(
        inbox: Inbox, tmp_path: Path, unique_seed: int) -> None:
    # given a folder with an image, the same bytes under another name, and a hidden file
    data = jpeg_bytes(face_image(unique_seed))
    (tmp_path / "a.jpg").write_bytes(data)
    (tmp_path / "b.jpg").write_bytes(data)
    # when it is watched once, with files stable at once
    run = inbox.veil("watch", str(tmp_path), "--once", "--json",
                     env={"VEIL_WATCH__STABLE_S": "0"})
    # then both files are gone, one source, the second reported as its duplicate
    assert run.returncode == 0, run.stderr
    files = json.loads(run.stdout)["files"]
    assert [(f["file"], f["duplicate"]) for f in files] == [("a.jpg", False), ("b.jpg", True)]
    assert files[0]["source_id"] == files[1]["source_id"]
    assert len(sources(inbox.settings)) == 1 and list(tmp_path.iterdir()) == []


def test_a_move_folder_inside_the_watched_folder_is_refused(inbox: Inbox, tmp_path: Path) -> None:
    run = inbox.veil("watch", str(tmp_path), "--after", f"move:{tmp_path / 'done'}")
    assert run.returncode == 2 and "outside PATH" in run.stderr
