"""Per-frame face coverage and mask flicker for redacted videos (used by throughput_video.py).

No video here has annotated faces, so coverage is judged against a *reference*: CenterFace in
full precision at native size above a score threshold (0.3 and 0.5 by default), run on every
``step``-th frame of the input. Hazard: at 0.3 the reference includes non-faces (measured: the
back of a head in one-by-one-person-detection.mp4, frames ~1000-1200, score 0.33-0.35), which
deface blurs and Veil does not; the 0.5 reference keeps confident faces only. A reference
face counts as covered in an output frame when the grayscale SSIM
inside its box, between input and output frame, is below 0.6 (the rule of coverage.py). The same
reference and rule judge every tool, so the comparison is fair even though the reference misses
faces too small for it; it is deface's own model (at a stricter threshold than deface's 0.2).

Flicker counts frames where a redaction box present in the frame just before and again within
the next few frames is missing, from Veil's own per-frame boxes: for each box in frame t-1, a
gap of g frames (1 <= g <= ``max_gap``) with no box overlapping it (IoU >= 0.3) and a box that
does in frame t+g adds g flicker frames.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import av
import cv2
import numpy as np
from numpy.typing import NDArray
from skimage.metrics import structural_similarity

Box = tuple[float, float, float, float]


def frames_of(path: Path, step: int = 1) -> dict[int, NDArray[np.uint8]]:
    """Every ``step``-th displayed frame (BGR, rotation applied) by index."""
    out: dict[int, NDArray[np.uint8]] = {}
    with av.open(io.BytesIO(path.read_bytes()), "r") as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % step == 0:
                image = np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)
                turns = round(float(frame.rotation or 0) / 90) % 4
                out[index] = np.ascontiguousarray(np.rot90(image, turns)) if turns else image
    return out


def reference_faces(frames: dict[int, NDArray[np.uint8]], threshold: float = 0.3
                    ) -> dict[int, list[Box]]:
    from infra.settings import get_settings
    from workers.detectors.centerface import CenterFaceConfig, CenterFaceDetector

    detector = CenterFaceDetector(CenterFaceConfig(precision="fp32", threshold=threshold),
                                  get_settings().models)
    found: dict[int, list[Box]] = {}
    indices = sorted(frames)
    for start in range(0, len(indices), 8):
        batch = indices[start:start + 8]
        for index, dets in zip(batch, detector.detect_batch([frames[i] for i in batch]),
                               strict=True):
            found[index] = [d.box for d in dets]
    return found


def coverage(originals: dict[int, NDArray[np.uint8]], output: Path,
             faces: dict[int, list[Box]], step: int) -> dict[str, float]:
    """Share of reference faces destroyed in ``output`` (frames matched by index)."""
    redacted = frames_of(output, step)
    total = covered = small = small_covered = 0
    for index, boxes in faces.items():
        if index not in redacted:
            total += len(boxes)  # a frame missing from the output covers nothing
            continue
        for box in boxes:
            hit = _destroyed(originals[index], redacted[index], box)
            total += 1
            covered += hit
            if box[3] - box[1] < 20:
                small += 1
                small_covered += hit
    return {"reference_faces": total, "coverage": round(covered / max(total, 1), 4),
            "faces_lt20px": small, "coverage_lt20px": round(small_covered / max(small, 1), 4),
            "output_frames": len(redacted) and max(redacted) + 1}


def _destroyed(a: NDArray[np.uint8], b: NDArray[np.uint8], box: Box) -> bool:
    height, width = a.shape[:2]
    x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
    x2, y2 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
    if x2 - x1 < 7 or y2 - y1 < 7:
        ga = cv2.cvtColor(a[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY).astype(float)
        gb = cv2.cvtColor(b[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY).astype(float)
        return bool(ga.size and np.abs(ga - gb).mean() > 12)  # too small for a 7x7 SSIM
    ga = cv2.cvtColor(a[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    gb = cv2.cvtColor(b[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    return bool(structural_similarity(ga, gb, win_size=7, data_range=255) < 0.6)


def flicker(boxes: Sequence[Sequence[Box]], max_gap: int = 3, iou: float = 0.3) -> int:
    """Frames where a box present just before and again within ``max_gap`` frames is missing."""
    arrays = [np.array(b, dtype=np.float64).reshape(-1, 4) for b in boxes]
    gaps = 0
    for t in range(1, len(arrays)):
        for box in arrays[t - 1]:
            if _overlaps(box, arrays[t], iou):
                continue
            for g in range(1, max_gap + 1):
                if t + g >= len(arrays):
                    break
                if _overlaps(box, arrays[t + g], iou):
                    gaps += g
                    break
    return gaps


def _overlaps(box: NDArray[np.float64], others: NDArray[np.float64], threshold: float) -> bool:
    if not len(others):
        return False
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = (box[2] - box[0]) * (box[3] - box[1]) \
        + (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1]) - inter
    return bool(np.any(inter / np.maximum(union, 1e-9) >= threshold))
