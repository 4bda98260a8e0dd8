"""Detectors: one small interface, one module per backend, chosen by configuration."""

from workers.detectors.base import Detection, Detector

__all__ = ["Detection", "Detector"]
