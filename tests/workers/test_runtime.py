"""Per-process runtime: how a pool child shares the cores."""

from __future__ import annotations

import cv2

from workers import runtime


def test_a_process_detector_gives_opencv_the_same_share_of_cores_as_onnxruntime() -> None:
    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(4)
        runtime.process_detector(0)  # 0: the library's default, left as it is
        assert cv2.getNumThreads() == 4
        runtime.process_detector(1)  # one process per core: one thread each
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)
