"""Redaction quality on a ground-truth set: coverage and over-redaction.

A ground-truth box counts as *covered* when its content was destroyed: the grayscale SSIM
between original and output, averaged over the box's pixels of the 7x7-window SSIM map (uniform
window, data range 255), is below 0.6. Using the whole-image map lets boxes smaller than the
window be scored too. *Over-redaction* is the share of pixels outside every box (each box first
enlarged by half around its centre) whose value changed by more than 40 in any channel (max over
B, G and R), which JPEG re-encoding noise at quality 92 almost never reaches.

    # Veil in-process (every stage: decode, detect, redact, encode, decode again)
    python -m bench.coverage DATA/faces-dev/ground_truth.json --veil
    python -m bench.coverage GT.json --veil --set threshold=0.1 --box-scale 1.4
    # any folder of outputs, e.g. deface's (files named STEM_anonymized.jpg)
    python -m bench.coverage GT.json --outputs OUT/deface --suffix _anonymized
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from skimage.metrics import structural_similarity

SSIM_COVERED = 0.6
CHANGED = 40
LARGE_PX = 20


@dataclass
class ImageScore:
    ssim: list[float]  # one per ground-truth box
    heights: list[float]
    changed_outside: int
    outside: int


def score_image(original: NDArray[np.uint8], output: NDArray[np.uint8],
                boxes: list[list[Any]]) -> ImageScore:
    if output.shape != original.shape:
        raise ValueError(f"output is {output.shape}, original {original.shape}")
    gray_a = cv2.cvtColor(original, cv2.COLOR_BGR2GRAY)
    gray_b = cv2.cvtColor(output, cv2.COLOR_BGR2GRAY)
    _, ssim_map = structural_similarity(gray_a, gray_b, win_size=7, data_range=255, full=True)
    height, width = gray_a.shape
    outside = np.ones((height, width), bool)
    ssims, heights = [], []
    for x1, y1, x2, y2, *_ in boxes:
        xa, ya = max(0, int(x1)), max(0, int(y1))
        xb, yb = min(width, max(xa + 1, int(round(x2)))), min(height, max(ya + 1, int(round(y2))))
        ssims.append(float(ssim_map[ya:yb, xa:xb].mean()))
        heights.append(float(y2 - y1))
        cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * 0.75, (y2 - y1) * 0.75
        outside[max(0, int(cy - hh)):max(0, int(np.ceil(cy + hh))),
                max(0, int(cx - hw)):max(0, int(np.ceil(cx + hw)))] = False
    diff = np.abs(original.astype(np.int16) - output.astype(np.int16)).max(axis=2)
    return ImageScore(ssims, heights, int((diff[outside] > CHANGED).sum()), int(outside.sum()))


def summarise(scores: list[ImageScore]) -> dict[str, float]:
    ssim = np.array([s for sc in scores for s in sc.ssim])
    heights = np.array([h for sc in scores for h in sc.heights])
    large = heights >= LARGE_PX
    covered = ssim < SSIM_COVERED
    return {
        "boxes": int(ssim.size),
        "coverage": float(covered.mean()),
        "boxes_ge20": int(large.sum()),
        "coverage_ge20": float(covered[large].mean()),
        "coverage_lt20": float(covered[~large].mean()) if (~large).any() else float("nan"),
        "over_redaction": sum(s.changed_outside for s in scores) / sum(s.outside for s in scores),
    }


def _read(path: Path) -> NDArray[np.uint8]:
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if frame is None:
        raise FileNotFoundError(path)
    return np.asarray(frame)


def evaluate_folder(gt_path: Path, outputs: Path, suffix: str = "") -> dict[str, float]:
    gt = json.loads(gt_path.read_text())
    scores = []
    for entry in gt["images"]:
        stem = Path(entry["file"]).stem + suffix
        matches = sorted(outputs.glob(f"{stem}.*"))
        if not matches:
            raise FileNotFoundError(f"no output for {entry['file']} in {outputs}")
        original = _read(gt_path.parent / entry["file"])
        scores.append(score_image(original, _read(matches[0]), entry["boxes"]))
    return summarise(scores)


_worker: dict[str, Any] = {}


def _init_worker(detector_overrides: dict[str, Any], redaction: dict[str, Any]) -> None:
    from infra.settings import ModelSettings
    from schemas.policy import Policy, RedactionParams
    from workers.detectors.registry import build_detector, parse_detector_config

    config = parse_detector_config({"type": "centerface", **detector_overrides})
    _worker["detector"] = build_detector(config, ModelSettings(intra_op_threads=1))
    _worker["policy"] = Policy(name="bench", raw_retention_s=60,
                               redaction=RedactionParams(**redaction))


def _veil_score(args: tuple[Path, list[list[Any]]]) -> ImageScore:
    from workers.image_pipeline import redact_image_bytes

    path, boxes = args
    data = path.read_bytes()
    result = redact_image_bytes(data, _worker["policy"], _worker["detector"], 80_000_000)
    output = np.asarray(cv2.imdecode(np.frombuffer(result.data, np.uint8), cv2.IMREAD_COLOR),
                        np.uint8)
    original = np.asarray(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), np.uint8)
    return score_image(original, output, boxes)


def evaluate_veil(gt_path: Path, detector_overrides: dict[str, Any],
                  redaction: dict[str, Any], processes: int) -> dict[str, float]:
    gt = json.loads(gt_path.read_text())
    jobs = [(gt_path.parent / e["file"], e["boxes"]) for e in gt["images"]]
    with ProcessPoolExecutor(processes, initializer=_init_worker,
                             initargs=(detector_overrides, redaction)) as pool:
        scores = list(pool.map(_veil_score, jobs, chunksize=8))
    return summarise(scores)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ground_truth", type=Path)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--outputs", type=Path, help="folder of redacted outputs to judge")
    source.add_argument("--veil", action="store_true", help="run Veil's redaction in-process")
    parser.add_argument("--suffix", default="", help="output name = original stem + suffix")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a CenterFace config field (repeatable)")
    parser.add_argument("--box-scale", type=float, default=None)
    parser.add_argument("--method", default=None, choices=["blur", "fill", "pixelate"])
    parser.add_argument("--mask", default=None, choices=["box", "ellipse"])
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    started = time.perf_counter()
    if args.veil:
        overrides = {k: _parse_value(v) for k, v in (s.split("=", 1) for s in args.set)}
        redaction = {k: v for k, v in (("box_scale", args.box_scale), ("method", args.method),
                                       ("mask", args.mask)) if v is not None}
        result: dict[str, Any] = evaluate_veil(args.ground_truth, overrides, redaction,
                                               args.processes)
        result["detector"] = overrides
        result["redaction"] = redaction
    else:
        result = evaluate_folder(args.ground_truth, args.outputs, args.suffix)
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
