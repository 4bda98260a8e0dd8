"""``veil redact``: one-off redaction of local files in this process, without any service.

Runs the same plain function as the Celery image task (:func:`redact_image_bytes`), so a local
run redacts exactly like the cluster, but writes nothing to the ledger. Work is spread over a
process pool; each child builds its own detector, whose ONNX session is created lazily in the
child (never in the parent, never before the fork). A bad file gives a result with an error and
the others go on.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from infra.settings import get_settings
from schemas.media import sniff
from schemas.policy import Policy
from workers import runtime
from workers.detectors.base import Detector
from workers.image_pipeline import redact_image_bytes
from workers.imageio import BadInputError, output_extension, sniff_image_format


@dataclass
class LocalResult:
    path: Path
    output: Path | None
    faces: int
    error: str | None
    guard: str | None = None  # "passed", "reredacted" (it changed the output) or "skipped"


def collect_inputs(paths: Sequence[Path]) -> list[Path]:
    """Files named directly, plus the images and videos (by content) under named folders."""
    return scan_inputs(paths)[0]


def count_inputs(paths: Sequence[Path]) -> int:
    return len(collect_inputs(paths))


def scan_inputs(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """The inputs (:func:`collect_inputs`) and, in one walk, the files under named folders
    that are neither images nor videos Veil reads (GIF, text, sidecar files; hidden files
    aside): left out of the run, and reported so that nobody takes a folder for done when some
    of it was not touched."""
    found: list[Path] = []
    skipped: list[Path] = []
    for path in paths:
        if not path.is_dir():
            found.append(path)
            continue
        for item in sorted(path.rglob("*")):
            if not item.is_file():
                continue
            if _looks_like_media(item):
                found.append(item)
            elif not item.name.startswith("."):
                skipped.append(item)
    return found, skipped


def redact_files(paths: Sequence[Path], out_dir: Path, policy: Policy,
                 processes: int | None = None,
                 progress: Callable[[int], None] | None = None) -> list[LocalResult]:
    """Redact every input into ``out_dir``; results come back in input order. Videos go
    through the cluster's chunk and assemble code (``producer.redact_video``), one at a time,
    each spread over the processes."""
    inputs = collect_inputs(paths)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = _output_paths(inputs, out_dir)
    pairs = list(zip(inputs, outputs, strict=True))
    videos = {i for i, (path, _) in enumerate(pairs) if _media_kind(path) == "video"}
    images = [pair for i, pair in enumerate(pairs) if i not in videos]
    done = iter(_redact_images(images, policy, processes, progress))
    return [_redact_video(*pair, policy, processes or os.cpu_count() or 1, progress)
            if i in videos else next(done) for i, pair in enumerate(pairs)]


def _failed(path: Path, exc: Exception) -> LocalResult:
    """The result of a file that could not be redacted, with a reason a person can read."""
    if isinstance(exc, BadInputError):
        return LocalResult(path, None, 0, str(exc))
    if isinstance(exc, OSError):
        return LocalResult(path, None, 0, f"cannot read the file: {exc.strerror or exc}")
    return LocalResult(path, None, 0, f"redaction failed: {type(exc).__name__}: {exc}")


def _redact_video(path: Path, output: Path, policy: Policy, processes: int,
                  progress: Callable[[int], None] | None) -> LocalResult:
    from producer.redact_video import redact_video_file
    try:
        result = redact_video_file(path, output, policy, processes)
    except Exception as exc:  # fail closed for this file only; the batch goes on
        return _failed(path, exc)
    finally:
        if progress:
            progress(1)
    actions = {g["action"] for g in result.guard}
    guard = "reredacted" if "reredacted" in actions else "passed" if "passed" in actions \
        else "skipped"
    return LocalResult(path, output, result.faces, None, guard)


def _redact_images(jobs: list[tuple[Path, Path]], policy: Policy, processes: int | None,
                   progress: Callable[[int], None] | None) -> list[LocalResult]:
    if not jobs:
        return []
    processes = max(1, min(processes or os.cpu_count() or 1, len(jobs)))
    if processes == 1:
        _init_child(policy, threads=get_settings().models.intra_op_threads)
        results = []
        for path, output in jobs:
            results.append(_redact_one(path, output))
            if progress:
                progress(1)
        return results
    # forkserver, not fork: a child forked from a parent that already runs onnxruntime threads
    # (a test, a notebook) can deadlock; children build their own detector in the initializer.
    # Work goes out in chunks so that per-task messaging stays small next to the ~10 ms an image
    # takes, yet the last chunks still balance the processes.
    context = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
    chunksize = max(1, min(8, len(jobs) // (processes * 16)))
    results = []
    # ProcessPoolExecutor, not multiprocessing.Pool: a child that dies (or an initializer that
    # raises) breaks the pool with an error instead of hanging while it respawns workers.
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_init_child,
                             initargs=(policy, 1)) as pool:
        for result in pool.map(_redact_job, jobs, chunksize=chunksize):
            results.append(result)
            if progress:
                progress(1)
    return results


def _redact_job(job: tuple[Path, Path]) -> LocalResult:
    return _redact_one(*job)


def _media_kind(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            head = handle.read(400)  # MPEG-TS is recognised by sync bytes at 0, 188 and 376
    except OSError:
        return None
    if sniff_image_format(head) is not None:
        return "image"
    found = sniff(head)
    return "video" if found and found[0] == "video" else None


def _looks_like_media(path: Path) -> bool:
    return _media_kind(path) is not None


def _output_paths(inputs: Sequence[Path], out_dir: Path) -> list[Path]:
    """``photo.jpeg`` -> ``photo.jpg``; a clash (or an input's own path) gets ``-1``, ``-2``..."""
    taken = {p.resolve() for p in inputs}
    outputs = []
    for path in inputs:
        try:
            with path.open("rb") as handle:
                fmt = sniff_image_format(handle.read(32))
        except OSError:
            fmt = None
        ext = "mp4" if _media_kind(path) == "video" else output_extension(fmt)
        candidate, n = out_dir / f"{path.stem}.{ext}", 0
        while candidate.resolve() in taken:
            n += 1
            candidate = out_dir / f"{path.stem}-{n}.{ext}"
        taken.add(candidate.resolve())
        outputs.append(candidate)
    return outputs


_child: dict[str, object] = {}


def _init_child(policy: Policy, threads: int) -> None:
    settings = get_settings()
    _child["detector"] = runtime.process_detector(threads)  # every class enabled, as workers
    _child["policy"] = policy
    _child["max_pixels"] = settings.limits.max_image_pixels


def _redact_one(path: Path, output: Path) -> LocalResult:
    detector = _child["detector"]
    policy = _child["policy"]
    max_pixels = _child["max_pixels"]
    assert isinstance(detector, Detector) and isinstance(policy, Policy)
    assert isinstance(max_pixels, int)
    try:
        result = redact_image_bytes(path.read_bytes(), policy, detector, max_pixels)
    except Exception as exc:  # fail closed for this file only; the batch goes on
        return _failed(path, exc)
    if result.ext != output.suffix[1:]:  # the name was planned from the sniffed format
        return LocalResult(path, None, 0, f"encoder wrote {result.ext}, expected {output.suffix}")
    partial = output.with_name(f".{output.name}.partial")
    partial.write_bytes(result.data)
    partial.replace(output)
    return LocalResult(path, output, len(result.detections), None,
                       result.guard.action if result.guard else "skipped")
