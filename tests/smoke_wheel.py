"""The runtime-only smoke: Veil as production installs it, driven as a user types it.

Builds the wheel, installs it without editable mode and without dev extras into a fresh venv with
``infra/install-runtime.sh`` (the Dockerfile's own install step, pinned by ``constraints.txt``),
then, from an empty folder so nothing resolves against the source tree, runs that venv's
``veil``: import every module of the four packages, ``stack up`` (a private SeaweedFS on its own
ports, its own database and Redis databases), a worker, ``ingest --wait`` of photos and a short
video in text mode, ``status``, ``export``, ``dsar`` (the photos' EXIF capture times must be
read), ``purge --dry-run`` and an in-process ``redact``; then stops what it started.

Run by ``make smoke`` (and so by CI). It is not a pytest module: its own venv has no pytest. It
prints one line per check and closes with ``smoke: N passed, N failed``; exit 0 only if all
passed. Usage: ``python tests/smoke_wheel.py [--keep]`` (``--keep`` leaves the temp folder).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PORTS = {"S3_PORT": 18533, "MASTER_PORT": 19533, "VOLUME_PORT": 18280, "FILER_PORT": 19088,
         "FLOWER_PORT": 15655}
CAPTURED = "2024:05:01 08:30:00"  # EXIF DateTimeOriginal of the smoke photos (UTC: no offset)

MAKE_INPUTS = r"""
import io, sys
from fractions import Fraction
from importlib import resources
from pathlib import Path
import av, cv2, numpy as np
from PIL import Image

out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
raw = resources.files("producer").joinpath("assets", "astronaut.jpg").read_bytes()
face = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
for i, size in enumerate((320, 200)):
    img = Image.fromarray(cv2.cvtColor(cv2.resize(face, (size, size)), cv2.COLOR_BGR2RGB))
    exif = Image.Exif(); exif.get_ifd(0x8769)[0x9003] = sys.argv[2]
    img.save(out / f"photo {i}.jpg", "JPEG", quality=90, exif=exif.tobytes())
with av.open(str(out / "clip.mp4"), "w") as box:
    stream = box.add_stream("libx264", rate=10)
    stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
    stream.time_base = Fraction(1, 10)
    small = cv2.resize(face, (120, 120))
    for n in range(20):
        frame = np.full((240, 320, 3), 200, np.uint8)
        frame[60:180, 10 + 5 * n:130 + 5 * n] = small
        vf = av.VideoFrame.from_ndarray(frame, format="bgr24"); vf.pts = n
        box.mux(stream.encode(vf))
    box.mux(stream.encode())
"""

IMPORT_ALL = r"""
import importlib, pkgutil, sys
names = []
for top in ("schemas", "infra", "workers", "producer"):
    pkg = importlib.import_module(top)
    if "site-packages" not in pkg.__file__:
        sys.exit(f"{top} imported from {pkg.__file__}, not the installed wheel")
    names.append(top)
    for info in pkgutil.walk_packages(pkg.__path__, top + "."):
        importlib.import_module(info.name)
        names.append(info.name)
print(len(names))
"""


class Smoke:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.venv = root / "venv"
        self.cwd = root / "work"
        self.cwd.mkdir(parents=True)
        self.results: list[tuple[str, bool, str]] = []
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("VEIL_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        self.env.update({
            "XDG_STATE_HOME": str(root / "state"),  # the installed default state folder
            "VEIL_DB__URL": "postgresql://postgres@127.0.0.1:5432/veil_smoke",
            "VEIL_BROKER__URL": "redis://127.0.0.1:6379/0",
            "VEIL_BROKER__RESULT_URL": "redis://127.0.0.1:6379/1",
            "VEIL_BROKER__QUEUE_PREFIX": "veil-smoke",
            "VEIL_S3__ENDPOINT": f"127.0.0.1:{PORTS['S3_PORT']}",
            **{f"VEIL_STACK__{k}": str(v) for k, v in PORTS.items()},
        })

    # --- running things -------------------------------------------------------------------
    def veil(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.venv / "bin" / "veil"), *args], cwd=self.cwd,
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def python(self, code: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.venv / "bin" / "python"), "-c", code, *args],
                              cwd=self.cwd, env=self.env, capture_output=True, text=True,
                              timeout=300)

    def check(self, name: str, run: Callable[[], str]) -> bool:
        started = time.monotonic()
        try:
            detail = run()
            ok = True
        except Exception as exc:  # a smoke reports every failure and goes on
            detail, ok = f"{type(exc).__name__}: {exc}", False
        took = time.monotonic() - started
        self.results.append((name, ok, detail))
        print(f"{'ok  ' if ok else 'FAIL'} {name} ({took:.1f} s){': ' + detail if detail else ''}",
              flush=True)
        return ok


def expect(proc: subprocess.CompletedProcess[str], code: int = 0) -> str:
    """The command's stdout, if it exited with ``code`` and printed no traceback."""
    if proc.returncode != code or "Traceback" in proc.stdout + proc.stderr:
        raise AssertionError(f"exit {proc.returncode} (expected {code})\n{proc.stdout[-1500:]}"
                             f"\n{proc.stderr[-1500:]}")
    return proc.stdout


def build_and_install(smoke: Smoke) -> str:
    wheels = smoke.root / "wheels"
    build = smoke.root / "build"
    shutil.copytree(REPO, build, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".state", "build", "*.egg-info", "__pycache__", "bench", "tests",
        "demo-output"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                    str(build)], check=True, capture_output=True, text=True)
    wheel = next(wheels.glob("veil-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(smoke.venv)], check=True)
    subprocess.run(["sh", str(REPO / "infra" / "install-runtime.sh"),
                    str(smoke.venv / "bin" / "pip"), str(wheel), str(REPO / "constraints.txt")],
                   check=True, capture_output=True, text=True)
    freeze = subprocess.run([str(smoke.venv / "bin" / "pip"), "freeze"], capture_output=True,
                            text=True, check=True).stdout.lower()
    dev_only = [p for p in ("pytest", "scikit-image", "ruff", "mypy", "pyyaml")
                if f"\n{p}==" in "\n" + freeze]
    if dev_only:
        raise AssertionError(f"dev-only packages in the runtime venv: {dev_only}")
    return wheel.name


def run_smoke(smoke: Smoke) -> None:
    inputs = smoke.cwd / "incoming"
    if not smoke.check("build the wheel, install it runtime-only",
                       lambda: build_and_install(smoke)):
        return
    smoke.check("import every module from the installed wheel",
                lambda: expect(smoke.python(IMPORT_ALL)).strip() + " modules")
    smoke.check("make inputs with runtime packages only",
                lambda: expect(smoke.python(MAKE_INPUTS, str(inputs), CAPTURED)))
    if not smoke.check("veil stack up", lambda: expect(smoke.veil("stack", "up")).splitlines()[-1]):
        return
    log = (smoke.root / "worker.log").open("ab")
    worker = subprocess.Popen([str(smoke.venv / "bin" / "veil"), "worker", "--concurrency", "1"],
                              cwd=smoke.cwd, env=smoke.env, stdout=log, stderr=log,
                              start_new_session=True)
    try:
        run_pipeline(smoke, inputs)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        smoke.check("veil stack down", lambda: expect(smoke.veil("stack", "down")).strip()[-80:])


def run_pipeline(smoke: Smoke, inputs: Path) -> None:
    def ingest() -> str:
        out = expect(smoke.veil("ingest", str(inputs), "--wait", "--camera", "gate-1",
                                "--timeout", "240"))
        if "3 files, 3 queued, 0 duplicates, 0 failed" not in out:
            raise AssertionError(out)
        return out.strip().splitlines()[-1]

    def status() -> str:
        first = expect(smoke.veil("status")).strip().splitlines()[0]
        if not first.startswith("sources 3 "):
            raise AssertionError(first)
        return first

    def export() -> str:
        target = smoke.cwd / "exported"
        expect(smoke.veil("export", "--all", "-o", str(target)))
        files = sorted(p.name for p in target.iterdir())
        if len([f for f in files if f.endswith(".jpg")]) != 2 or not any(
                f.endswith(".mp4") for f in files):
            raise AssertionError(f"exported {files}")
        return ", ".join(files)

    def dsar() -> str:
        target = smoke.cwd / "request.zip"
        expect(smoke.veil("dsar", "--camera", "gate-1", "--from", "2024-05-01T08:00Z",
                          "--to", "2024-05-01T09:00Z", "-o", str(target)))
        with zipfile.ZipFile(target) as zf:
            media = [n for n in zf.namelist() if n.startswith("media/")]
        if len(media) != 2:  # the two photos: their EXIF time is in range, the clip has none
            raise AssertionError(f"media in the access request: {media}")
        return f"{len(media)} photos by EXIF capture time"

    def redact() -> str:
        out = json.loads(expect(smoke.veil("redact", str(inputs / "photo 0.jpg"),
                                           str(inputs / "clip.mp4"), "-o",
                                           str(smoke.cwd / "redacted"), "--json")))
        files = out["files"]
        if len(files) != 2 or any(f["error"] or f["faces"] < 1 for f in files):
            raise AssertionError(files)
        return ", ".join(f"{Path(f['input']).name}: {f['faces']} face(s), guard {f['guard']}"
                         for f in files)

    if not smoke.check("veil ingest DIR --wait (text mode)", ingest):
        return
    smoke.check("veil status", status)
    smoke.check("veil export --all", export)
    smoke.check("veil dsar", dsar)
    smoke.check("veil purge --dry-run",
                lambda: expect(smoke.veil("purge", "--dry-run")).strip()[-100:])
    smoke.check("veil redact (in-process)", redact)


def drop_database() -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc",
                    "DROP DATABASE IF EXISTS veil_smoke WITH (FORCE)"], capture_output=True)


def main() -> int:
    keep = "--keep" in sys.argv[1:]
    root = Path(tempfile.mkdtemp(prefix="veil-smoke-"))
    started = time.monotonic()
    drop_database()
    smoke = Smoke(root)
    try:
        run_smoke(smoke)
    finally:
        drop_database()
        if keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    passed = sum(ok for _, ok, _ in smoke.results)
    failed = len(smoke.results) - passed
    print(f"smoke took {time.monotonic() - started:.0f} s")
    print(f"smoke: {passed} passed, {failed} failed")
    return 0 if failed == 0 and passed else 1


if __name__ == "__main__":
    sys.exit(main())
