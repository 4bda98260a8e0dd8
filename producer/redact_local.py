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
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from infra.settings import get_settings
from producer.scanning import is_linked_folder, outside_link, walk
from schemas.media import sniff
from schemas.policy import Policy
from workers import image_frames, runtime
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
    return scan_inputs(paths).inputs


def count_inputs(paths: Sequence[Path]) -> int:
    return len(collect_inputs(paths))


@dataclass
class Scan:
    """What a walk of the named paths found: the inputs to redact (images and videos, by
    content), the other files under named folders (left out, and reported so that nobody takes
    a folder for done when some of it was not touched), and the inputs refused before reading,
    with the reason (a symbolic link that leads out of the folder it was found in)."""

    inputs: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    refused: dict[Path, str] = field(default_factory=dict)


def scan_inputs(paths: Sequence[Path], exclude: Path | None = None) -> Scan:
    """Walk the named paths once (see :class:`Scan`). Files named directly are taken as they
    are, links included: the user chose them. Under a folder, a symbolic link is followed only
    when its target lies inside that folder; hidden files are left alone, and so is
    ``exclude`` (the output folder: `veil redact . -o out` run twice must not redact its own
    outputs again)."""
    scan = Scan()
    skip = exclude.resolve() if exclude is not None else None
    for path in paths:
        if not path.is_dir():
            scan.inputs.append(path)
            continue
        for item in walk(path):
            if skip is not None and item.resolve().is_relative_to(skip):
                continue
            reason = outside_link(item, path)
            if reason:
                scan.inputs.append(item)
                scan.refused[item] = reason
            elif is_linked_folder(item):
                continue  # a folder linked from inside the folder: walked where it lies
            elif not item.is_file():
                continue
            elif _looks_like_media(item):
                scan.inputs.append(item)
            elif not item.name.startswith("."):
                scan.skipped.append(item)
    return scan


def redact_files(paths: Sequence[Path], out_dir: Path, policy: Policy,
                 processes: int | None = None,
                 progress: Callable[[int], None] | None = None,
                 scan: Scan | None = None) -> list[LocalResult]:
    """Redact every input into ``out_dir``; results come back in input order. Videos go
    through the cluster's chunk and assemble code (``producer.redact_video``), one at a time,
    each spread over the processes. ``scan``: the paths' walk, when the caller has it."""
    scan = scan or scan_inputs(paths, exclude=out_dir)
    inputs = [p for p in scan.inputs if p not in scan.refused]
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = _output_paths(inputs, out_dir)
    pairs = list(zip(inputs, outputs, strict=True))
    videos = {i for i, (path, _) in enumerate(pairs) if _media_kind(path) == "video"}
    images = [pair for i, pair in enumerate(pairs) if i not in videos]
    done = iter(_redact_images(images, policy, processes, progress))
    results = iter([_redact_video(*pair, policy, processes or os.cpu_count() or 1, progress)
                    if i in videos else next(done) for i, pair in enumerate(pairs)])
    if progress and scan.refused:
        progress(len(scan.refused))
    return [LocalResult(p, None, 0, scan.refused[p]) if p in scan.refused else next(results)
            for p in scan.inputs]


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
    """``photo.jpeg`` -> ``photo.jpg``; a clash (or an input's own path) gets ``-1``, ``-2``...

    Names are kept within the file system's limit (255 bytes on most): a long stem is cut, on a
    character boundary, to leave room for the suffix and extension."""
    taken = {p.resolve() for p in inputs}
    limit = _name_max(out_dir)
    outputs = []
    for path in inputs:
        ext = _planned_extension(path)
        candidate, n = out_dir / fit_name(path.stem, f".{ext}", limit), 0
        while candidate.resolve() in taken:
            n += 1
            candidate = out_dir / fit_name(path.stem, f"-{n}.{ext}", limit)
        taken.add(candidate.resolve())
        outputs.append(candidate)
    return outputs


def _planned_extension(path: Path) -> str:
    """The extension the output of ``path`` will have: MP4 for videos; for images, the
    sequence formats keep their kind (a multi-page TIFF stays TIFF), stills as
    :func:`output_extension` says."""
    if _media_kind(path) == "video":
        return "mp4"
    try:
        with path.open("rb") as handle:
            head = handle.read(64)
            fmt = sniff_image_format(head)
            data = head + handle.read() if fmt in image_frames.SEQUENCE_FORMATS else head
    except OSError:
        return output_extension(None)
    return image_frames.output_extension_for(data, fmt) or output_extension(fmt)


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def fit_name(stem: str, tail: str, limit: int = 255) -> str:
    """``stem + tail``, the stem cut (never mid-character) so the name fits ``limit`` bytes."""
    room = limit - len(os.fsencode(tail))
    encoded = os.fsencode(stem)
    while len(encoded) > room:
        stem = stem[:-1]
        encoded = os.fsencode(stem)
    return stem + tail


def write_atomically(output: Path, data: bytes) -> None:
    """Write ``data`` to ``output`` through a short hidden temporary name in the same folder
    (a ``.NAME.partial`` of a long name exceeds the file system's name limit)."""
    handle, partial = tempfile.mkstemp(dir=output.parent, prefix=".veil-", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(partial, output)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


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
    write_atomically(output, result.data)
    return LocalResult(path, output, len(result.detections), None,
                       result.guard.action if result.guard else "skipped")
