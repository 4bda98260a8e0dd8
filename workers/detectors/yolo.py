"""Any YOLO-style ONNX detector an operator provides (a face, plate or tattoo model of their own).

Veil ships no such model; ``VEIL_MODELS__YOLO_PATH`` names the file, ``YOLO_CLASS_NAMES`` the
model's class names in index order, ``YOLO_CLASSES`` which of them Veil redacts as which of its
classes (``{"license_plate": "plate"}``; a name that already is a Veil class maps to itself,
others are ignored), and ``YOLO_INPUT_SIZE`` the square size it was exported with.

Frames are letterboxed (aspect kept, grey 114 padding, as Ultralytics trains), RGB, 0-1 float.
The usual exported output layouts are read:

* ``v5``: ``(1, N, 5 + C)`` rows of centre x, centre y, width, height, objectness, class scores
  (YOLOv5, v7); score = objectness x class score;
* ``v8``: ``(1, 4 + C, N)`` (or transposed) rows of box and class scores, no objectness
  (YOLOv8, v9, v11);
* ``end2end``: ``(1, N, 6)`` rows of x1, y1, x2, y2, score, class index, already suppressed
  (YOLOv10, or models exported with NMS).

``auto`` picks by shape; a one-class model's ``(1, N, 6)`` is ambiguous (v5 or end2end) and is
read as v5, so set ``layout`` explicitly for end-to-end one-class models.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, Field

from infra.settings import ModelSettings
from schemas.enums import DetectionClass
from workers.detectors.base import Detection, Detector
from workers.detectors.centerface import nms
from workers.detectors.onnx_session import OrtSession

Layout = Literal["auto", "v5", "v8", "end2end"]
VEIL_CLASSES = tuple(str(c) for c in DetectionClass)  # the classes a policy can redact


class YoloConfig(BaseModel):
    type: Literal["yolo"] = "yolo"
    threshold: float = Field(default=0.25, gt=0.0, lt=1.0)
    nms_iou: float = Field(default=0.45, gt=0.0, le=1.0)
    layout: Layout = "auto"


class YoloDetector(Detector):
    key = "yolo"

    def __init__(self, config: YoloConfig, models: ModelSettings) -> None:
        super().__init__()
        if models.yolo_path is None:
            raise RuntimeError("the yolo detector needs a model file: set VEIL_MODELS__YOLO_PATH "
                               "(and VEIL_MODELS__YOLO_CLASS_NAMES)")
        if not models.yolo_class_names:
            raise RuntimeError("the yolo detector needs the model's class names in index order: "
                               "set VEIL_MODELS__YOLO_CLASS_NAMES, e.g. '[\"face\", \"plate\"]'")
        bad = {v for v in models.yolo_classes.values() if v not in VEIL_CLASSES}
        if bad:
            raise RuntimeError(f"VEIL_MODELS__YOLO_CLASSES maps to unknown classes {sorted(bad)}; "
                               f"use {', '.join(VEIL_CLASSES)}")
        self.config = config
        self.models = models
        self.path = models.yolo_path
        self.size = models.yolo_input_size
        # model class index -> Veil class, or None to ignore it
        self.mapping: list[str | None] = [
            models.yolo_classes.get(name, name if name in VEIL_CLASSES else None)
            for name in models.yolo_class_names
        ]
        self._session: OrtSession | None = None
        self._input = ""
        self._version: str | None = None

    @property
    def model_version(self) -> str:
        if self._version is None:
            self._version = f"yolo-{hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]}"
        return self._version

    @property
    def params(self) -> dict[str, Any]:
        return {**self.config.model_dump(), "input_size": self.size,
                "class_names": list(self.models.yolo_class_names),
                "classes": {n: c for n, c in zip(self.models.yolo_class_names, self.mapping,
                                                 strict=True) if c}}

    @property
    def classes(self) -> frozenset[str]:
        return frozenset(c for c in self.mapping if c)

    def _load(self) -> None:
        self._session = OrtSession(self.path.read_bytes(), self.models)
        self._input = self._session.session.get_inputs()[0].name

    def _detect_batch(self, frames: Sequence[NDArray[np.uint8]]) -> list[list[Detection]]:
        assert self._session is not None
        results = []
        for frame in frames:  # one at a time: exported models often have a fixed batch of 1
            blob, factor, pad_x, pad_y = letterbox(frame, self.size)
            output = self._session.run({self._input: blob})[0]
            boxes, scores, labels = read_output(np.asarray(output), len(self.mapping),
                                                self.config.layout)
            keep = scores >= self.config.threshold
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            boxes = (boxes - (pad_x, pad_y, pad_x, pad_y)) / factor
            results.append(self._detections(frame, boxes, scores, labels))
        return results

    def _detections(self, frame: NDArray[np.uint8], boxes: NDArray[np.float32],
                    scores: NDArray[np.float32], labels: NDArray[np.intp]) -> list[Detection]:
        height, width = frame.shape[:2]
        found: list[Detection] = []
        for label in np.unique(labels):
            cls = self.mapping[int(label)] if 0 <= label < len(self.mapping) else None
            if cls is None:
                continue
            mine = labels == label
            rows = np.concatenate([boxes[mine], scores[mine, None]], axis=1).astype(np.float32)
            for x1, y1, x2, y2, score in rows[nms(rows, self.config.nms_iou)].tolist():
                x1, x2 = max(0.0, x1), min(float(width), x2)
                y1, y2 = max(0.0, y1), min(float(height), y2)
                if x2 > x1 and y2 > y1:
                    found.append(Detection(cls, float(score), (x1, y1, x2, y2)))
        return found


def letterbox(frame: NDArray[np.uint8], size: int) -> tuple[NDArray[np.float32], float, int, int]:
    """The frame fitted into ``size`` x ``size`` (aspect kept, grey padding), as RGB NCHW 0-1."""
    height, width = frame.shape[:2]
    factor = min(size / height, size / width)
    new_w, new_h = max(1, round(width * factor)), max(1, round(height * factor))
    resized = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    canvas = cv2.copyMakeBorder(resized, pad_y, size - new_h - pad_y, pad_x,
                                size - new_w - pad_x, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    blob = cv2.dnn.blobFromImage(canvas, 1 / 255.0, swapRB=True)
    return np.asarray(blob, np.float32), factor, pad_x, pad_y


def read_output(output: NDArray[Any], num_classes: int, layout: Layout
                ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.intp]]:
    """Corner boxes (input pixels), scores and class indices from one image's output."""
    rows = output[0] if output.ndim == 3 else output
    layout = detect_layout(rows.shape, num_classes) if layout == "auto" else layout
    if layout == "v8" and rows.shape[0] == 4 + num_classes and rows.shape[1] != 4 + num_classes:
        rows = rows.T
    rows = np.asarray(rows, np.float32)
    if layout == "end2end":
        return rows[:, :4], rows[:, 4], rows[:, 5].astype(np.intp)
    if layout == "v5":
        class_scores = rows[:, 5:5 + num_classes] * rows[:, 4:5]
    else:
        class_scores = rows[:, 4:4 + num_classes]
    labels = np.argmax(class_scores, axis=1) if len(rows) else np.zeros(0, np.intp)
    scores = class_scores[np.arange(len(rows)), labels] if len(rows) else np.zeros(0, np.float32)
    cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return boxes.astype(np.float32), scores.astype(np.float32), labels.astype(np.intp)


def detect_layout(shape: tuple[int, ...], num_classes: int) -> Layout:
    rows, cols = shape
    if cols == 5 + num_classes:
        return "v5"
    if rows == 4 + num_classes or cols == 4 + num_classes:
        return "v8"
    if cols == 6:
        return "end2end"
    raise ValueError(f"cannot read a YOLO output of shape {shape} for {num_classes} classes: "
                     "expected (N, 5+C) for v5, (4+C, N) for v8 or (N, 6) for end2end; check "
                     "VEIL_MODELS__YOLO_CLASS_NAMES or set the layout")
