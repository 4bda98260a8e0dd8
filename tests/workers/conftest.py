"""Fixtures shared by the worker tests: the CenterFace detector on CPU and the astronaut photo."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from skimage import data

from infra.settings import ModelSettings
from workers.detectors.base import Detector
from workers.detectors.registry import build_detector, parse_detector_config


@pytest.fixture(scope="session")
def detector() -> Detector:
    return build_detector(parse_detector_config({"type": "centerface"}),
                          ModelSettings(provider="cpu"))


@pytest.fixture(scope="session")
def astronaut() -> NDArray[np.uint8]:
    return np.asarray(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
