"""ONNX Runtime sessions, kept apart from the models that use them (the Immich layout).

Providers are chosen from what this onnxruntime build offers, in preference order: CUDA when it
is present and the settings do not force ``cpu``, then CPU. Each provider's options live in a
small property so that tuning one never touches the others. Create sessions only in the process
that runs inference: a session made before a fork (Celery prefork) is not safe to use after it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from infra.settings import ModelSettings

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
_PREFERENCE = (CUDA, CPU)


class OrtSession:
    def __init__(self, model: bytes, settings: ModelSettings) -> None:
        self.settings = settings
        if settings.provider == "cuda" and CUDA not in ort.get_available_providers():
            raise RuntimeError(
                "models.provider is 'cuda' but this onnxruntime has no CUDA provider "
                f"(available: {', '.join(ort.get_available_providers())}); install "
                "onnxruntime-gpu (the `gpu` extra) or set VEIL_MODELS__PROVIDER=cpu"
            )
        self.providers = self._providers_default
        self.session = ort.InferenceSession(
            model,
            sess_options=self._sess_options_default,
            providers=self.providers,
            provider_options=[self._provider_options(p) for p in self.providers],
        )
        log.info("onnxruntime session on %s", self.session.get_providers()[0])

    @property
    def provider(self) -> str:
        """The provider that actually runs the graph (onnxruntime may have fallen back)."""
        return str(self.session.get_providers()[0])

    def run(self, inputs: Mapping[str, NDArray[Any]]) -> list[NDArray[np.float32]]:
        return list(self.session.run(None, dict(inputs)))

    @property
    def _providers_default(self) -> list[str]:
        available = set(ort.get_available_providers())
        wanted = [CPU] if self.settings.provider == "cpu" else list(_PREFERENCE)
        return [p for p in wanted if p in available]

    def _provider_options(self, provider: str) -> dict[str, Any]:
        return {CUDA: self._cuda_options, CPU: self._cpu_options}.get(provider, {})

    @property
    def _cuda_options(self) -> dict[str, Any]:
        # Input sizes vary per image: exhaustive cuDNN search would re-run for every new shape.
        return {"arena_extend_strategy": "kSameAsRequested", "cudnn_conv_algo_search": "HEURISTIC"}

    @property
    def _cpu_options(self) -> dict[str, Any]:
        return {"arena_extend_strategy": "kSameAsRequested"}

    @property
    def _sess_options_default(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # CenterFace's unused BN initializers warn at load
        options.intra_op_num_threads = self.settings.intra_op_threads  # 0: onnxruntime default
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        return options
