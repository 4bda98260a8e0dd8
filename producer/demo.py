"""`make demo`: the main job on the embedded stack, end to end, in about a minute.

Brings the stack up, starts a worker and Flower in the background, builds a small demo set with
real faces (the public-domain astronaut and cameraman photos shipped in ``producer/assets``, at
several sizes, in a group, rotated by EXIF, with GPS and PNG text metadata), ingests it through
the queue, waits, exports the redacted files into ``demo-output/`` (in the current folder) and
prints a summary. It stops what it started.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, PngImagePlugin

from infra.settings import get_settings
from infra.stack import check_s3, stack_down, stack_up
from schemas.enums import JobState

VEIL = str(Path(sys.executable).parent / "veil")


def _asset(name: str) -> NDArray[np.uint8]:
    """A shipped demo photo: package data, so the installed wheel has it (no dev-only library)."""
    raw = np.frombuffer(resources.files("producer").joinpath("assets", name).read_bytes(), np.uint8)
    frame = cv2.imdecode(raw, cv2.IMREAD_COLOR)
    if frame is None:
        raise RuntimeError(f"demo asset {name} is missing or unreadable")
    return frame.astype(np.uint8)


def _resized(frame: NDArray[np.uint8], width: int, height: int) -> NDArray[np.uint8]:
    return np.asarray(cv2.resize(frame, (width, height)), dtype=np.uint8)


def _faces() -> list[tuple[str, NDArray[np.uint8]]]:
    astronaut = _asset("astronaut.jpg")
    cameraman = _asset("cameraman.jpg")
    group = np.full((520, 1040, 3), 235, np.uint8)
    for i, size in enumerate((240, 180, 140, 100)):
        x = 20 + sum((240, 180, 140, 100)[:i]) + 40 * i
        group[20:20 + size, x:x + size] = cv2.resize(astronaut, (size, size))
    group[280:500, 20:240] = cv2.resize(cameraman, (220, 220))
    return [
        ("astronaut.jpg", astronaut),
        ("astronaut-small.jpg", _resized(astronaut, 160, 160)),
        ("cameraman.png", cameraman),
        ("group-photo.jpg", group),
        ("crowd-far.jpg", _resized(group, 520, 260)),
    ]


def build_demo_set(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    faces = _faces()
    for name, frame in faces:
        rgb = Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        buf = io.BytesIO()
        if name.endswith(".png"):
            info = PngImagePlugin.PngInfo()
            info.add_text("Location", "Demo Street 1, Berlin")
            rgb.save(buf, "PNG", pnginfo=info)
        else:
            exif = Image.Exif()
            gps = exif.get_ifd(0x8825)
            gps[1], gps[2], gps[3], gps[4] = "N", (52.0, 31.0, 12.0), "E", (13.0, 24.0, 36.0)
            rgb.save(buf, "JPEG", quality=92, exif=exif.tobytes())
        (folder / name).write_bytes(buf.getvalue())
    # stored sideways with EXIF orientation 6: Veil must turn it upright before detecting
    sideways = Image.fromarray(cv2.cvtColor(faces[0][1], cv2.COLOR_BGR2RGB)).rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways.save(folder / "astronaut-sideways.jpg", "JPEG", quality=92, exif=exif.tobytes())
    return len(list(folder.iterdir()))


def _background(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    handle = open(log, "ab")  # noqa: SIM115 - owned by the child process
    return subprocess.Popen(args, stdout=handle, stderr=handle, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main() -> int:
    settings = get_settings()
    started = time.monotonic()
    s3_was_running = check_s3(settings).ok
    print("== veil demo: bringing the stack up")
    stack_up(settings, echo=lambda m: print(f"   {m}"))
    logs = settings.stack.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    worker = _background([VEIL, "worker", "--concurrency", "2"], logs / "demo-worker.log")
    flower = _background([VEIL, "flower"], logs / "demo-flower.log")
    flower_url = f"http://127.0.0.1:{settings.stack.flower_port}"
    try:
        inbox = settings.stack.state_dir / "demo-input"
        count = build_demo_set(inbox)
        print(f"== ingesting {count} demo images from {inbox}")
        t0 = time.monotonic()
        run = subprocess.run([VEIL, "ingest", str(inbox), "--wait", "--json", "--timeout", "300"],
                             capture_output=True, text=True)
        seconds = time.monotonic() - t0
        if not run.stdout.strip():
            print(run.stderr, file=sys.stderr)
            return 1
        report = json.loads(run.stdout)["sources"]
        out = Path.cwd() / "demo-output"
        ids = [s["source_id"] for s in report if s["state"] == JobState.SUCCEEDED]
        subprocess.run([VEIL, "export", *ids, "-o", str(out)], check=False,
                       capture_output=True, text=True)
        faces = _faces_found(ids)
        print("== summary")
        for s in report:
            note = " (already ingested earlier)" if s["duplicate"] else ""
            print(f"   {s['file']:<26} {s['state']:<10} {faces.get(s['source_id'], 0)} faces{note}")
        ok = sum(s["state"] == JobState.SUCCEEDED for s in report)
        print(f"   files: {len(report)}   succeeded: {ok}   faces found: {sum(faces.values())}")
        print(f"   ingest to redacted: {seconds:.1f} s   whole demo: "
              f"{time.monotonic() - started:.1f} s")
        print(f"   redacted outputs:   {out}")
        print(f"   Flower dashboard:   {flower_url}  (user {settings.stack.flower_user}; it ran "
              "during the demo: start it again with `veil flower`)")
        print("   ledger:             veil status   |   veil status SOURCE_ID")
        return 0 if ok == len(report) else 1
    finally:
        _stop(worker)
        _stop(flower)
        if not s3_was_running:
            stack_down(settings, echo=lambda m: print(f"   {m}"))


def _faces_found(source_ids: list[str]) -> dict[str, int]:
    from infra import db, ledger_reports

    with db.connect() as conn:
        # confident faces; the low-threshold boxes (recall first) are blurred but not counted
        return ledger_reports.confident_faces(conn, source_ids, min_score=0.5)


if __name__ == "__main__":
    sys.exit(main())
