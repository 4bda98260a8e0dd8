"""The generic YOLO backend reads the usual exported layouts, undoes the letterbox, maps the
model's class names to Veil's, and says clearly what is wrong with its settings.

The models are real ONNX files built at test time: their output is a fixed prediction tensor
(plus zero times the input, so the graph consumes its input as an exported model does)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from infra.settings import ModelSettings
from workers.detectors.registry import build_configured_detector, parse_detector_config
from workers.detectors.yolo import YoloConfig, YoloDetector, detect_layout, read_output

SIZE = 320
FRAME = np.full((320, 640, 3), 90, np.uint8)  # letterboxed: factor 0.5, 80 px bars above/below


def _model(path: Path, prediction: np.ndarray) -> Path:
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(prediction.shape))
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["prediction", "nothing"], ["output0"]),
    ]
    graph = helper.make_graph(nodes, "fake-yolo", [inp], [out], initializer=[
        numpy_helper.from_array(prediction.astype(np.float32), "prediction"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _settings(path: Path, names: list[str], classes: dict[str, str] | None = None
              ) -> ModelSettings:
    return ModelSettings(provider="cpu", yolo_path=path, yolo_class_names=names,
                         yolo_classes=classes or {}, yolo_input_size=SIZE, detectors=["yolo"])


# In input pixels: a face centred at (100, 120), 40 x 40 -> frame box (160, 40, 240, 120).
FACE_IN_FRAME = (160.0, 40.0, 240.0, 120.0)


def test_v8_layout_maps_boxes_back_through_the_letterbox_and_names_to_classes(
        tmp_path: Path) -> None:
    rows = np.array([  # cx, cy, w, h, score(face), score(license_plate)
        [100, 120, 40, 40, 0.9, 0.0],
        [200, 200, 60, 20, 0.1, 0.8],
        [250, 150, 30, 30, 0.1, 0.05],  # below the threshold
        [102, 121, 40, 40, 0.6, 0.0],  # a duplicate of the face: suppressed
    ], np.float32)
    path = _model(tmp_path / "v8.onnx", rows.T[None])  # (1, 4 + C, N)
    detector = YoloDetector(YoloConfig(), _settings(path, ["face", "license_plate"],
                                                    {"license_plate": "plate"}))
    assert detector.classes == {"face", "plate"}
    found = sorted(detector.detect(FRAME), key=lambda d: d.cls)
    assert [d.cls for d in found] == ["face", "plate"]
    assert found[0].box == pytest.approx(FACE_IN_FRAME)
    assert found[0].score == pytest.approx(0.9)
    assert found[1].box == pytest.approx((340, 220, 460, 260))
    assert detector.model_version.startswith("yolo-")


def test_v5_layout_multiplies_objectness_and_ignores_unmapped_classes(tmp_path: Path) -> None:
    rows = np.array([  # cx, cy, w, h, objectness, person, face
        [100, 120, 40, 40, 0.8, 0.0, 0.9],  # face, 0.72
        [200, 200, 80, 160, 0.9, 0.95, 0.1],  # a person: not a Veil class, not mapped
        [250, 150, 30, 30, 0.2, 0.0, 0.9],  # face but 0.18: below 0.25
    ], np.float32)
    path = _model(tmp_path / "v5.onnx", rows[None])
    detector = YoloDetector(YoloConfig(), _settings(path, ["person", "face"]))
    found = detector.detect(FRAME)
    assert len(found) == 1 and found[0].cls == "face"
    assert found[0].score == pytest.approx(0.72)
    assert found[0].box == pytest.approx(FACE_IN_FRAME)


def test_end_to_end_layout_is_read_as_corners(tmp_path: Path) -> None:
    rows = np.array([[80, 100, 120, 140, 0.7, 1], [0, 0, 0, 0, 0.0, 0]], np.float32)
    path = _model(tmp_path / "e2e.onnx", rows[None])
    detector = YoloDetector(YoloConfig(layout="end2end"),
                            _settings(path, ["tattoo", "face"], {"tattoo": "custom"}))
    found = detector.detect(FRAME)
    assert [(d.cls, d.box) for d in found] == [("face", pytest.approx(FACE_IN_FRAME))]


def test_settings_errors_say_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="VEIL_MODELS__YOLO_PATH"):
        YoloDetector(YoloConfig(), ModelSettings())
    with pytest.raises(RuntimeError, match="YOLO_CLASS_NAMES"):
        YoloDetector(YoloConfig(), ModelSettings(yolo_path=tmp_path / "m.onnx"))
    with pytest.raises(RuntimeError, match="unknown classes"):
        YoloDetector(YoloConfig(), _settings(tmp_path / "m.onnx", ["a"], {"a": "car"}))
    with pytest.raises(ValueError, match=r"shape \(7, 9\)"):
        detect_layout((7, 9), 2)


def test_read_output_accepts_v8_untransposed() -> None:
    rows = np.array([[100, 120, 40, 40, 0.2, 0.9]], np.float32)  # (N, 4 + C), N=1
    boxes, scores, labels = read_output(rows[None], 2, "v8")
    assert boxes.tolist() == [[80, 100, 120, 140]]
    assert scores.tolist() == pytest.approx([0.9]) and labels.tolist() == [1]


def test_configuration_chooses_the_yolo_backend(tmp_path: Path) -> None:
    rows = np.array([[100, 120, 40, 40, 0.9]], np.float32)
    path = _model(tmp_path / "one.onnx", rows.T[None])
    models = _settings(path, ["face"]).model_copy(
        update={"detector_options": {"yolo": {"threshold": 0.5}}})
    detector = build_configured_detector(models)
    assert isinstance(detector, YoloDetector) and detector.config.threshold == 0.5
    assert parse_detector_config({"type": "yolo", "layout": "v5"}).type == "yolo"
    assert detector.detect(FRAME)[0].box == pytest.approx(FACE_IN_FRAME)
