"""The detector interface: frames in, boxes with class and score out.

A detector loads its model lazily, behind a lock, on the first call (``detect`` -> ``load`` ->
``_detect_batch``). Nothing heavy happens at import or construction time: Celery forks its
workers after importing the task modules, and an ONNX Runtime session (CUDA above all) does not
survive a fork. Build detectors anywhere; they come alive in the process that uses them.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Detection:
    cls: str  # "face", "plate", ...
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the frame given
    uncertain: bool = False  # score within the policy's review band (set by detect_frames)


class Detector(ABC):
    key: ClassVar[str]

    def __init__(self) -> None:
        self._load_lock = threading.Lock()
        self._loaded = False

    @property
    @abstractmethod
    def model_version(self) -> str:
        """Identifies the weights, e.g. ``centerface-1a2b3c4d5e6f``; recorded in the ledger."""

    @property
    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The settings that shaped the detections (JSON-ready); recorded in the ledger."""

    def load(self) -> None:
        if self._loaded:
            return
        with self._load_lock:
            if not self._loaded:
                self._load()
                self._loaded = True

    def detect(self, frame: NDArray[np.uint8]) -> list[Detection]:
        """Detections in one BGR HxWx3 uint8 frame."""
        return self.detect_batch([frame])[0]

    @property
    def classes(self) -> frozenset[str]:
        """The classes this detector can report (a policy asking for others must fail)."""
        return frozenset()

    def sees_crops(self, classes: Collection[str], height: int, width: int) -> bool:
        """Whether a crop of a frame, detected alone, yields what the whole frame yields inside
        it, at the same scale and at a cost in proportion to its pixels (for ``classes``, in
        frames of ``height`` x ``width``). The video motion gate (workers/video/motion.py)
        detects only changed regions where it does. False unless a detector says so: one that
        resizes every input to a fixed size does not.
        """
        return False

    def detect_batch(self, frames: Sequence[NDArray[np.uint8]],
                     classes: Collection[str] | None = None) -> list[list[Detection]]:
        """Detections for each frame, in order; frames may differ in size.

        With ``classes``, only those classes are returned, and a detector that reports none of
        them does not run at all (a faces-only policy skips the text model).
        """
        _check_frames(frames)
        if not frames:
            return []
        if classes is not None and not self.classes & set(classes):
            return [[] for _ in frames]
        self.load()
        found = self._detect_batch(frames)
        if classes is None:
            return found
        wanted = set(classes)
        return [[d for d in dets if d.cls in wanted] for dets in found]

    @abstractmethod
    def _load(self) -> None:
        """Create the inference session; called once, under the lock, in the using process."""

    @abstractmethod
    def _detect_batch(self, frames: Sequence[NDArray[np.uint8]]) -> list[list[Detection]]: ...


def _check_frames(frames: Sequence[NDArray[np.uint8]]) -> None:
    for frame in frames:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected a BGR HxWx3 uint8 frame, got {frame.shape} "
                             f"{frame.dtype}")
