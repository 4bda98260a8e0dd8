"""Choose and build a detector from configuration (the Frigate layout).

Each backend module defines a detector class with a ``key`` and a pydantic config class whose
``type`` field is ``Literal[key]``; the discriminated union :data:`DetectorConfig` validates a
configuration and picks the backend. A backend whose import fails (a missing optional package)
is skipped with a log line, so the others still work. To add one (plates, text, YOLO): write the
module, then list it in ``_BACKENDS``.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field, TypeAdapter

from infra.settings import ModelSettings
from workers.detectors.base import Detector

log = logging.getLogger(__name__)

# module, detector class, config class
_BACKENDS = [
    ("workers.detectors.centerface", "CenterFaceDetector", "CenterFaceConfig"),
    ("workers.detectors.text", "TextDetector", "TextConfig"),
    ("workers.detectors.yolo", "YoloDetector", "YoloConfig"),
]


def _import_backends() -> dict[str, tuple[type[Detector], type[Any]]]:
    found: dict[str, tuple[type[Detector], type[Any]]] = {}
    for module_name, detector_name, config_name in _BACKENDS:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            log.warning("detector backend %s skipped: %s", module_name, exc)
            continue
        detector = getattr(module, detector_name)
        found[detector.key] = (detector, getattr(module, config_name))
    return found


BACKENDS = _import_backends()

if TYPE_CHECKING:
    from workers.detectors.centerface import CenterFaceConfig as DetectorConfig
else:
    _configs = tuple(config for _, config in BACKENDS.values())
    DetectorConfig = (
        Annotated[Union[_configs], Field(discriminator="type")]  # noqa: UP007
        if len(_configs) > 1
        else _configs[0]
    )


def parse_detector_config(data: dict[str, Any]) -> DetectorConfig:
    """Validate a detector configuration such as ``{"type": "centerface", "threshold": 0.2}``."""
    return TypeAdapter(DetectorConfig).validate_python(data)


def build_detector(config: DetectorConfig, models: ModelSettings) -> Detector:
    """A detector for ``config``; its model loads on first use, in the process that uses it."""
    if config.type not in BACKENDS:
        raise ValueError(f"detector backend {config.type!r} is not available "
                         f"(available: {', '.join(BACKENDS) or 'none'})")
    detector_cls, _ = BACKENDS[config.type]
    return detector_cls(config, models)  # type: ignore[call-arg]


def build_configured_detector(models: ModelSettings) -> Detector:
    """The detector that ``models.detectors`` enables: one backend, or several pooled.

    Each name is a backend key; its config comes from ``models.detector_options[name]``. An
    unknown or unavailable backend is an error here, not a silent gap: a policy that redacts
    plates must not run without the plate detector.
    """
    from workers.detectors.multi import MultiDetector

    if not models.detectors:
        raise ValueError("models.detectors is empty: enable at least one detector")
    built = [build_detector(parse_detector_config({**models.detector_options.get(name, {}),
                                                   "type": name}), models)
             for name in models.detectors]
    return built[0] if len(built) == 1 else MultiDetector(built)
