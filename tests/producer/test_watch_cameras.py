"""Cameras from inbox keys and the cameras file: policy, time zone, capture-time source, and
refusal of unknown cameras; the parsing on its own, then `veil watch --once` end to end."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from infra.settings import Settings
from producer.cameras import CameraBook, CameraRefused, CamerasFileError, camera_from_key
from tests.conftest import face_image
from tests.watching import Inbox, sources

CAMERAS = """
[cameras.gate]
policy = "default"
timezone = "Europe/Berlin"

[cameras.lobby]
capture_time = "upload"
"""


def exif_jpeg(seed: int, stamp: str) -> bytes:
    """A JPEG whose EXIF DateTimeOriginal is ``stamp`` with no offset (camera-local time)."""
    img = Image.fromarray(face_image(seed, size=96)[:, :, ::-1])
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = stamp
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    return buf.getvalue()


def test_the_camera_is_the_first_folder_of_the_key() -> None:
    assert camera_from_key("gate/2024/05/a.jpg") == "gate"
    assert camera_from_key("site-1/gate/a.jpg", prefix="site-1/") == "gate"
    assert camera_from_key("a.jpg") is None
    assert camera_from_key("/a.jpg") is None


def test_a_bad_cameras_file_names_the_file_and_the_problem(
        settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "cameras.toml"
    path.write_text('[cameras.gate]\ntimezone = "Mars/Olympus"\n')
    with pytest.raises(CamerasFileError, match=r"cameras.toml: cameras.gate.timezone: .*Mars"):
        CameraBook(settings.model_copy(update={"cameras_file": path}))
    path.write_text('[cameras.gate]\npolicy = "nope"\n')
    with pytest.raises(CamerasFileError, match="camera 'gate': unknown policy 'nope'"):
        CameraBook(settings.model_copy(update={"cameras_file": path}))


def test_unknown_cameras_take_the_default_policy_or_are_refused(
        settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "cameras.toml"
    path.write_text(CAMERAS)
    book = CameraBook(settings.model_copy(update={"cameras_file": path}))
    assert book.for_key("stranger/a.jpg").policy.name == settings.default_policy
    assert book.for_key("stranger/a.jpg").known is False
    watch = settings.watch.model_copy(update={"unknown_cameras": "refuse"})
    strict = CameraBook(settings.model_copy(update={"cameras_file": path, "watch": watch}))
    assert strict.for_key("gate/a.jpg").known
    with pytest.raises(CameraRefused, match="camera 'stranger' is not in the cameras file"):
        strict.for_key("stranger/a.jpg")


def test_watch_applies_the_cameras_file_and_keeps_refused_uploads(
        inbox: Inbox, tmp_path: Path, unique_seed: int) -> None:
    # given a cameras file (gate: Berlin time from metadata; lobby: upload time) that refuses
    # unknown cameras, and an upload from each camera plus one from a camera it does not name
    cameras = tmp_path / "cameras.toml"
    cameras.write_text(CAMERAS)
    inbox.env.update({"VEIL_CAMERAS_FILE": str(cameras), "VEIL_WATCH__UNKNOWN_CAMERAS": "refuse"})
    inbox.put("gate/a.jpg", exif_jpeg(unique_seed, "2024:07:01 12:00:00"))
    before = datetime.now(UTC) - timedelta(seconds=5)
    inbox.put("lobby/b.jpg", exif_jpeg(unique_seed + 1, "2020:01:01 08:00:00"))
    inbox.put("stranger/c.jpg", exif_jpeg(unique_seed + 2, "2024:07:01 12:00:00"))
    # when the watcher runs once
    run = inbox.veil("watch", "--once")
    # then it exits 1 and names the refused upload and why
    assert run.returncode == 1, run.stderr
    assert f"{inbox.prefix}stranger/c.jpg: camera 'stranger' is not in the cameras file" \
        in run.stdout
    assert "inbox: 2 ingested, 1 refused" in run.stdout
    # and the gate's EXIF local time is read in Berlin's summer time; the lobby's is ignored
    found = {s["camera"]: s for s in sources(inbox.settings)}
    assert set(found) == {"gate", "lobby"}
    assert found["gate"]["captured_at"] == datetime(2024, 7, 1, 10, 0, tzinfo=UTC)
    assert before <= found["lobby"]["captured_at"] <= datetime.now(UTC)
    # and the refused upload stays in the inbox, counted as the backlog `veil status` shows
    assert [k for k, _ in inbox.emptied()] == ["stranger/c.jpg"]
    status = json.loads(inbox.veil("status", "--json").stdout)
    assert status["watch"]["backlog"] >= 1
    assert "inbox backlog" in inbox.veil("status").stdout
    # and once the camera is added, the next run ingests it
    cameras.write_text(CAMERAS + '\n[cameras.stranger]\npolicy = "default"\n')
    again = inbox.veil("watch", "--once", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["counts"] == {"ingested": 1}
    assert inbox.emptied() == []


def test_watch_refuses_to_start_with_a_broken_cameras_file(inbox: Inbox, tmp_path: Path) -> None:
    cameras = tmp_path / "cameras.toml"
    cameras.write_text("[cameras.gate\n")
    run = inbox.veil("watch", "--once", env={"VEIL_CAMERAS_FILE": str(cameras)})
    assert run.returncode == 2
    assert "cameras.toml: not valid TOML" in run.stderr and "Traceback" not in run.stderr
