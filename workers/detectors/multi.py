"""Several detectors as one: what ``runtime.detector()`` returns when more than one is enabled.

Callers (the image job, every video frame) hold one :class:`Detector`. This one runs each enabled
backend on the same frames and pools their detections; with ``classes`` it runs only the
backends that report a wanted class, so a faces-only policy never pays for the text model. The
time each backend took is kept per class (``timings``) for the benchmarks and the ledger.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from workers.detectors.base import Detection, Detector


class MultiDetector(Detector):
    key = "multi"

    def __init__(self, detectors: Sequence[Detector]) -> None:
        super().__init__()
        if not detectors:
            raise ValueError("MultiDetector needs at least one detector")
        self.detectors = list(detectors)
        self.last_timings: dict[str, float] = {}  # backend key -> seconds, of the last call

    @property
    def model_version(self) -> str:
        return "+".join(d.model_version for d in self.detectors)

    @property
    def params(self) -> dict[str, Any]:
        return {"detectors": [{"key": d.key, **d.params} for d in self.detectors]}

    @property
    def classes(self) -> frozenset[str]:
        return frozenset().union(*(d.classes for d in self.detectors))

    def sees_crops(self, classes: Collection[str], height: int, width: int) -> bool:
        used = [d for d in self.detectors if d.classes & set(classes)]
        return bool(used) and all(d.sees_crops(classes, height, width) for d in used)

    def detect_batch(self, frames: Sequence[NDArray[np.uint8]],
                     classes: Collection[str] | None = None) -> list[list[Detection]]:
        pooled: list[list[Detection]] = [[] for _ in frames]
        self.last_timings = {}
        for detector in self.detectors:
            if classes is not None and not detector.classes & set(classes):
                continue
            started = time.perf_counter()
            for found, more in zip(pooled, detector.detect_batch(frames, classes), strict=True):
                found.extend(more)
            self.last_timings[detector.key] = time.perf_counter() - started
        return pooled

    def _load(self) -> None:
        for detector in self.detectors:
            detector.load()

    def _detect_batch(self, frames: Sequence[NDArray[np.uint8]]) -> list[list[Detection]]:
        return self.detect_batch(frames)
