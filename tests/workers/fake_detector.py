"""A base for test detectors that report faces by a rule of their own (no model to load)."""

from __future__ import annotations

from typing import Any

from workers.detectors.base import Detector


class FakeFaceDetector(Detector):
    """Reports the class ``face`` only; subclasses set ``key`` and write ``_detect_batch``."""

    @property
    def model_version(self) -> str:
        return f"{self.key}-1"

    @property
    def params(self) -> dict[str, Any]:
        return {}

    @property
    def classes(self) -> frozenset[str]:
        return frozenset({"face"})

    def _load(self) -> None:
        pass
