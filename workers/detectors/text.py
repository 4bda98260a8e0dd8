"""Licence plates and legible text: PP-OCRv4's text detector with plain DB post-processing.

No licence-plate model ships in any package we may install, but the PP-OCRv4 text *detector*
(``ch_PP-OCRv4_det_infer.onnx``, Apache-2.0) ships inside the ``rapidocr-onnxruntime`` wheel, and
a plate is, for redaction, a short block of text. The network outputs a per-pixel probability of
"text here" at input resolution (a DB, differentiable binarisation, head). The post-processing
is the classic one, without pyclipper or shapely: threshold the map, take each connected region's
minimum-area rectangle, score it by the mean probability inside, grow it by the DB "unclip"
distance (area x ratio / perimeter; the network is trained to predict shrunk text kernels), and
return its axis-aligned bounds.

Each region is labelled ``plate`` when its shape is plate-like (aspect ratio within
``plate_aspect``, after merging the words of one line) and ``text`` otherwise, so a policy can
redact plates alone (the default) or all legible text. Shape cannot tell a plate from a short
sign: reading plate-shaped regions with the PP-OCRv4 recogniser from the same wheel and demoting
confident lower-case or long readings to ``text`` was tried and not kept (on the faces set it cut
plate-class over-redaction only from 2.00 to 1.92 %, at 70-270 ms more per image; a digits rule
also demoted vanity plates such as ``BIMMIAN``). Words that sit on one line and nearly
touch are merged first: a plate read as ``AB 123`` and ``CD`` is one plate, and redacting the gap
between them costs nothing.

Only the wheel's file is used: the package is located without importing it (its own imports
need pyclipper, shapely and the GUI OpenCV build, none of which Veil installs).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, Field

from infra.settings import ModelSettings
from workers.detectors.base import Detection, Detector
from workers.detectors.onnx_session import OrtSession

_MODEL_FILE = "ch_PP-OCRv4_det_infer.onnx"


class TextConfig(BaseModel):
    type: Literal["text"] = "text"
    # The input is scaled so that its short side is at least min_short_side (small plates need
    # the pixels) and its long side at most max_long_side (cost grows with the area). On the
    # plates evaluation set 512/1280 covered every plate, as rapidocr's 736/1600 did, at about
    # 0.65x of the cost on small frames (bench/README.md).
    min_short_side: int = Field(default=512, ge=64)
    max_long_side: int = Field(default=1280, ge=128)
    bin_threshold: float = Field(default=0.3, gt=0.0, lt=1.0)  # probability map -> text pixels
    box_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)  # mean probability of a region
    unclip_ratio: float = Field(default=1.6, ge=1.0, le=4.0)
    min_side_px: float = Field(default=3.0, ge=0.0)  # regions thinner than this are noise
    merge_gap: float = Field(default=0.6, ge=0.0)  # merge words closer than this x line height
    plate_aspect: tuple[float, float] = (1.0, 8.0)  # width / height of a plate-like region


def default_model_path(file: str = _MODEL_FILE) -> Path:
    """A model file inside the installed rapidocr-onnxruntime wheel, found without importing it."""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    for location in list(spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "models" / file
        if candidate.is_file():
            return candidate
    raise RuntimeError(
        "text detector weights not found: install rapidocr-onnxruntime without its dependencies "
        "(pip install --no-deps rapidocr-onnxruntime==1.4.4) or set VEIL_MODELS__TEXT_PATH to "
        f"a {file} file"
    )


class TextDetector(Detector):
    key = "text"

    def __init__(self, config: TextConfig, models: ModelSettings) -> None:
        super().__init__()
        self.config = config
        self.models = models
        self.path = models.text_path or default_model_path()
        self._version: str | None = None
        self._session: OrtSession | None = None

    @property
    def model_version(self) -> str:
        if self._version is None:
            digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
            self._version = f"ppocrv4-det-{digest[:12]}"
        return self._version

    @property
    def params(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json")

    @property
    def classes(self) -> frozenset[str]:
        return frozenset({"plate", "text"})

    def _load(self) -> None:
        self._session = OrtSession(self.path.read_bytes(), self.models)

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the network input: scaled per the config, multiples of 32."""
        factor = max(1.0, self.config.min_short_side / min(height, width))
        factor = min(factor, self.config.max_long_side / max(height, width))
        return (max(32, round(height * factor / 32) * 32),
                max(32, round(width * factor / 32) * 32))

    def probability_map(self, frame: NDArray[np.uint8]) -> NDArray[np.float32]:
        """The network's text probability per pixel of its input (see :meth:`input_size`)."""
        self.load()
        height, width = self.input_size(*frame.shape[:2])
        resized = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
        # PaddleOCR's normalisation: BGR as read by OpenCV, (x / 255 - 0.5) / 0.5.
        blob = cv2.dnn.blobFromImage(resized, 1 / 127.5, mean=(127.5, 127.5, 127.5))
        assert self._session is not None
        (out,) = self._session.run({"x": np.asarray(blob, np.float32)})
        return np.asarray(out[0, 0], np.float32)

    def _detect_batch(self, frames: Sequence[NDArray[np.uint8]]) -> list[list[Detection]]:
        results = []
        for frame in frames:
            prob = self.probability_map(frame)
            boxes = regions(prob, self.config)
            height, width = frame.shape[:2]
            sx, sy = width / prob.shape[1], height / prob.shape[0]
            boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]] * sx, 0, width)
            boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]] * sy, 0, height)
            results.append([self._detection(box) for box in merge_lines(boxes, self.config)])
        return results

    def _detection(self, box: NDArray[np.float32]) -> Detection:
        x1, y1, x2, y2, score = (float(v) for v in box)
        low, high = self.config.plate_aspect
        plate = low <= (x2 - x1) / max(1e-6, y2 - y1) <= high
        return Detection("plate" if plate else "text", score, (x1, y1, x2, y2))


def regions(prob: NDArray[np.float32], config: TextConfig) -> NDArray[np.float32]:
    """Boxes ``[x1, y1, x2, y2, score]`` in map pixels, unclipped, from a probability map."""
    mask = cv2.dilate((prob > config.bin_threshold).astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    found = []
    for contour in contours:
        rect = cv2.minAreaRect(contour)
        (cx, cy), (rw, rh), angle = rect
        if min(rw, rh) < config.min_side_px:
            continue
        score = _mean_inside(prob, np.asarray(cv2.boxPoints(rect), np.float32))
        if score < config.box_threshold:
            continue
        distance = rw * rh * config.unclip_ratio / (2 * (rw + rh))
        grown = ((cx, cy), (rw + 2 * distance, rh + 2 * distance), angle)
        xs, ys = cv2.boxPoints(grown).T
        found.append([xs.min(), ys.min(), xs.max(), ys.max(), score])
    return np.asarray(found, np.float32).reshape(-1, 5)


def _mean_inside(prob: NDArray[np.float32], points: NDArray[np.float32]) -> float:
    height, width = prob.shape
    x1 = int(np.clip(math.floor(points[:, 0].min()), 0, width - 1))
    x2 = int(np.clip(math.ceil(points[:, 0].max()), 0, width - 1))
    y1 = int(np.clip(math.floor(points[:, 1].min()), 0, height - 1))
    y2 = int(np.clip(math.ceil(points[:, 1].max()), 0, height - 1))
    mask = np.zeros((y2 - y1 + 1, x2 - x1 + 1), np.uint8)
    cv2.fillPoly(mask, [np.round(points - (x1, y1)).astype(np.int32)], 1)
    return float(cv2.mean(prob[y1:y2 + 1, x1:x2 + 1], mask)[0])


def merge_lines(boxes: NDArray[np.float32], config: TextConfig) -> NDArray[np.float32]:
    """Merge the words of one line, and lines stacked into one block (a two-line plate).

    Two boxes merge when they share a line (vertical overlap of at least half the smaller height,
    heights within 2x) with a horizontal gap below ``merge_gap`` x the smaller height, or when
    they are stacked (horizontal overlap of at least half the narrower width) with a vertical gap
    below ``merge_gap`` x the smaller height. The merged score is the best of the parts. Repeats
    until nothing changes (a few passes).
    """
    merged = [list(map(float, b)) for b in boxes]
    changed = True
    while changed and len(merged) > 1:
        changed = False
        merged.sort(key=lambda b: b[0])
        out: list[list[float]] = []
        for box in merged:
            for other in out:
                if _adjacent(other, box, config.merge_gap):
                    other[:4] = [min(other[0], box[0]), min(other[1], box[1]),
                                 max(other[2], box[2]), max(other[3], box[3])]
                    other[4] = max(other[4], box[4])
                    changed = True
                    break
            else:
                out.append(box)
        merged = out
    return np.asarray(merged, np.float32).reshape(-1, 5)


def _adjacent(a: list[float], b: list[float], gap: float) -> bool:
    ha, hb = a[3] - a[1], b[3] - b[1]
    wa, wb = a[2] - a[0], b[2] - b[0]
    x_overlap = min(a[2], b[2]) - max(a[0], b[0])  # negative: the horizontal gap
    y_overlap = min(a[3], b[3]) - max(a[1], b[1])  # negative: the vertical gap
    if y_overlap >= 0.5 * min(ha, hb) and max(ha, hb) <= 2.0 * min(ha, hb):
        return -x_overlap <= gap * min(ha, hb)
    if x_overlap >= 0.5 * min(wa, wb):
        return -y_overlap <= gap * min(ha, hb)
    return False
