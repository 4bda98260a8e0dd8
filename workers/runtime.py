"""Per-process state of a worker: settings and the detector, created lazily in the child.

The detector (and its onnxruntime session) must be built after Celery forks its pool: a CUDA
context does not survive a fork, and a session per child avoids lock contention.
"""

from __future__ import annotations

import os
import socket
import threading

from infra.settings import get_settings
from workers.detectors.base import Detector
from workers.detectors.registry import build_detector, parse_detector_config

_lock = threading.Lock()
_detector: Detector | None = None
_detector_pid: int | None = None


def detector() -> Detector:
    global _detector, _detector_pid
    with _lock:
        if _detector is None or _detector_pid != os.getpid():
            _detector = build_detector(parse_detector_config({"type": "centerface"}),
                                       get_settings().models)
            _detector_pid = os.getpid()
        return _detector


def worker_identity() -> str:
    """The actor name recorded in the ledger: a service role, host and pid, never a person."""
    return f"worker@{socket.gethostname()}:{os.getpid()}"
