"""`veil redact`: the same redaction in-process, without the stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import face_image, jpeg_bytes
from tests.media import png_with_text

VEIL = str(Path(sys.executable).parent / "veil")


def test_redact_in_process_names_outputs_like_export(tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "holiday.jpeg").write_bytes(jpeg_bytes(face_image(1)))
    (src / "sub" / "badge.png").write_bytes(png_with_text(face_image(2)))
    (src / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (src / "sub" / "party.xmp").write_bytes(b"<x:xmpmeta/>")  # a sidecar: not media Veil reads
    (src / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")  # hidden: not worth a word
    out = tmp_path / "out"
    run = subprocess.run([VEIL, "redact", str(src), "-o", str(out), "--json", "-j", "1"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1  # one file failed, and the exit code says so
    report = {Path(f["input"]).name: f for f in json.loads(run.stdout)["files"]}
    assert report["holiday.jpeg"]["faces"] >= 1
    assert report["holiday.jpeg"]["guard"] in ("passed", "reredacted")  # the default policy's
    assert report["broken.jpg"]["error"] and report["broken.jpg"]["guard"] is None
    assert sorted(p.name for p in out.iterdir()) == ["badge.png", "holiday.jpg"]
    # and the file it left alone is named, so the folder is not taken for done
    assert json.loads(run.stdout)["skipped"] == [str(src / "sub" / "party.xmp")]
    text = subprocess.run([VEIL, "redact", str(src / "sub"), "-o", str(tmp_path / "out2"),
                           "-j", "1"], capture_output=True, text=True, timeout=120)
    assert f"{src / 'sub' / 'party.xmp'} skipped: not an image or video" in text.stdout
    assert "2 files, " in text.stdout and "1 failed, 1 skipped" in text.stdout


def test_redacting_a_folder_into_itself_twice_leaves_the_outputs_alone(tmp_path: Path) -> None:
    # given a folder of photos redacted into a folder inside it
    (tmp_path / "photo.jpg").write_bytes(jpeg_bytes(face_image(3)))
    out = tmp_path / "redacted"
    for _ in range(2):  # when the same command runs again (text mode, as a user types it)
        run = subprocess.run([VEIL, "redact", str(tmp_path), "-o", str(out), "-j", "1"],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
    # then the second run redacted the photo again, never its own earlier output
    assert "1 files" in run.stdout.splitlines()[-1]
    assert sorted(p.name for p in out.iterdir()) == ["photo.jpg"]
