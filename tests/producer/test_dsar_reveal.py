"""Access requests the way regulators describe them, through the real stack: a contact sheet of
the recorded regions (no face on it), the requester revealed from the raw original with everyone
else redacted, refusals once the original is purged or under a hold forbidding it, and videos
cut to the requested range."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np

from infra.settings import Settings
from tests.conftest import face_image, jpeg_bytes
from tests.rights import execute, rows, veil
from tests.videos import VideoSpec, decode_video, write

RANGE = ("--camera", "lobby", "--from", "2024-05-01T08:00:00Z", "--to", "2024-05-01T09:00:00Z")


def _two_people(seed: int) -> np.ndarray:
    return np.hstack([face_image(seed, 320), face_image(seed + 1, 320)])


def _box_diff(a: np.ndarray, b: np.ndarray, box: list[float]) -> float:
    x1, y1, x2, y2 = (int(v) for v in box)
    return float(np.abs(a[y1:y2, x1:x2].astype(int) - b[y1:y2, x1:x2].astype(int)).mean())


def test_preview_then_reveal_shows_only_the_requester(
        clean_ledger: Settings, worker: object, tmp_path: Path, unique_seed: int) -> None:
    settings = clean_ledger
    # given a lobby photo of two people, redacted by a real worker
    original = _two_people(unique_seed)
    (tmp_path / "lobby.jpg").write_bytes(jpeg_bytes(original, 95))
    run = veil("ingest", str(tmp_path / "lobby.jpg"), "--camera", "lobby", "--captured-at",
               "2024-05-01T08:30:00", "--wait", "--json", "--timeout", "120")
    assert run.returncode == 0, run.stdout + run.stderr
    source_id = json.loads(run.stdout)["sources"][0]["source_id"]

    # when the operator asks for the contact sheet
    sheet = tmp_path / "sheet.png"
    preview = veil("dsar", *RANGE, "--preview", "-o", str(sheet), "--json")
    assert preview.returncode == 0, preview.stderr
    regions = [r for r in json.loads(preview.stdout)["regions"] if r["class"] == "face"]
    # then it lists both faces with ids, and the sheet is an image whose tiles come from the
    # redacted output: the faces on it are not the original faces
    assert len(regions) >= 2, regions
    picture = cv2.imread(str(sheet))
    assert picture is not None and picture.shape[0] > 100
    text = veil("dsar", *RANGE, "--preview", "-o", str(sheet))
    assert f"#{regions[0]['region_id']}" in text.stdout and "contact sheet of" in text.stdout
    def area(r: dict) -> float:  # type: ignore[type-arg]
        return float((r["box"][2] - r["box"][0]) * (r["box"][3] - r["box"][1]))
    # the two people are the two largest faces (the detector also boxes faint texture)
    left, right = sorted(sorted(regions, key=area)[-2:], key=lambda r: r["box"][0])
    assert left["box"][2] < 320 < right["box"][0]

    # when the left person is revealed
    out = tmp_path / "answer.zip"
    reveal = veil("dsar", *RANGE, "--reveal", str(left["region_id"]), "-o", str(out), "--json",
                  "--received", "2024-05-02T08:00:00Z")
    assert reveal.returncode == 0, reveal.stderr
    assert json.loads(reveal.stdout)["revealed"] == {source_id: [left["region_id"]]}
    with zipfile.ZipFile(out) as zf:
        media = [zf.read(n) for n in zf.namelist() if n.startswith("media/")]
        manifest = json.loads(zf.read("manifest.json"))
    shown = cv2.imdecode(np.frombuffer(media[0], np.uint8), cv2.IMREAD_COLOR)
    # then the requester's face is as in the original, and the other person's is not
    assert _box_diff(shown, original, left["box"]) < 6, "the revealed face is still redacted"
    assert _box_diff(shown, original, right["box"]) > 12, "the other face was revealed"
    assert manifest["sources"][0]["revealed_regions"] == [left["region_id"]]
    # and who revealed what is audited, with the raw read
    events = rows(settings, "SELECT action, actor, detail FROM audit_events WHERE source_id = %s"
                  " AND action IN ('raw_reveal', 'raw_read') ORDER BY id", source_id)
    reveals = [e for e in events if e["action"] == "raw_reveal"]
    assert len(reveals) == 1 and reveals[0]["detail"]["regions"] == [left["region_id"]]
    assert reveals[0]["actor"].startswith("operator:")
    assert any(e["detail"].get("for") == "dsar_reveal" for e in events)

    # when a region id of no recording in the request is named: a usage error
    typo = veil("dsar", *RANGE, "--reveal", "999999999", "-o", str(tmp_path / "x.zip"))
    assert typo.returncode == 2 and "999999999" in typo.stderr
    assert not (tmp_path / "x.zip").exists()

    # when the source is under a hold that forbids revealing: refused, naming the hold
    held = veil("hold", "set", source_id, "--reason", "case 12", "--forbid-reveal")
    assert held.returncode == 0, held.stderr
    refused = veil("dsar", *RANGE, "--reveal", str(left["region_id"]), "-o", str(out))
    assert refused.returncode == 1 and "forbids revealing" in refused.stderr
    assert veil("hold", "release", source_id, "--reason", "closed").returncode == 0

    # when the raw original has been purged: refused, the redacted copy only is left
    execute(settings, "UPDATE deletion_tasks SET due_at = now() - interval '1 minute'"
            " WHERE source_id = %s AND bucket = %s", source_id, settings.s3.bucket_raw)
    assert veil("purge", "--now").returncode == 0
    purged = veil("dsar", *RANGE, "--reveal", str(left["region_id"]), "-o", str(out))
    assert purged.returncode == 1 and "was purged" in purged.stderr, purged.stderr
    assert "Traceback" not in purged.stderr


def test_clip_and_reveal_cut_videos_to_the_range(
        clean_ledger: Settings, worker: object, tmp_path: Path) -> None:
    # given a 2-second video of a face starting at 08:00:00, redacted by a real worker
    path = write(tmp_path / "door.mp4", VideoSpec(frames=50, fps=25))
    run = veil("ingest", str(path), "--camera", "door", "--captured-at", "2024-05-01T08:00:00",
               "--wait", "--json", "--timeout", "240")
    assert run.returncode == 0, run.stdout + run.stderr
    window = ("--camera", "door", "--from", "2024-05-01T08:00:01Z",
              "--to", "2024-05-01T08:00:01.5Z")

    # when the access request asks for half a second, clipped
    out = tmp_path / "clip.zip"
    clip = veil("dsar", *window, "--clip", "-o", str(out), "--json")
    assert clip.returncode == 0, clip.stderr
    # then the video holds only the frames of that range (12 or 13 at 25 fps)
    with zipfile.ZipFile(out) as zf:
        video = [zf.read(n) for n in zf.namelist() if n.endswith(".mp4")]
    assert len(video) == 1
    assert 12 <= len(decode_video(video[0]).indices) <= 14

    # when the tracked face is revealed in the same range
    preview = json.loads(veil("dsar", *window, "--preview", "-o", str(tmp_path / "s.png"),
                              "--json").stdout)
    face = next(r for r in preview["regions"] if r["class"] == "face")
    revealed = veil("dsar", *window, "--clip", "--reveal", str(face["region_id"]),
                    "-o", str(tmp_path / "r.zip"), "--json")
    assert revealed.returncode == 0, revealed.stderr
    with zipfile.ZipFile(tmp_path / "r.zip") as zf:
        video = [zf.read(n) for n in zf.namelist() if n.endswith(".mp4")]
    # then it is cut to the range too, rendered from the original
    decoded = decode_video(video[0])
    assert 12 <= len(decoded.indices) <= 14
    assert decoded.indices[0] >= 24  # the burnt-in frame numbers: from 1.0 s on
