"""Per-process state of a worker: settings and the detector, created lazily in the child.

The detector (and its onnxruntime session) must be built after Celery forks its pool: a CUDA
context does not survive a fork, and a session per child avoids lock contention.
"""

from __future__ import annotations

import os
import socket
import threading

import cv2
from minio import Minio

from infra.objectstore import client_for
from infra.settings import get_settings
from workers.detectors.base import Detector
from workers.detectors.registry import build_configured_detector

_lock = threading.Lock()
_detector: Detector | None = None
_detector_pid: int | None = None


def detector() -> Detector:
    """This process's detector, covering every class ``models.detectors`` enables."""
    global _detector, _detector_pid
    with _lock:
        if _detector is None or _detector_pid != os.getpid():
            _detector = process_detector(get_settings().models.intra_op_threads)
            _detector_pid = os.getpid()
        return _detector


_storage: dict[int, Minio] = {}


def storage() -> Minio:
    """This process's S3 client with the worker role (its connection pool is reused)."""
    pid = os.getpid()
    if pid not in _storage:
        _storage[pid] = client_for("worker", get_settings())
    return _storage[pid]


def threads_per_child(concurrency: int) -> int:
    """onnxruntime threads per pool child: the cores shared out, so children do not fight."""
    return max(1, (os.cpu_count() or 1) // max(1, concurrency))


def process_detector(threads: int) -> Detector:
    """A detector for this process (every class ``models.detectors`` enables), with onnxruntime
    and OpenCV (resize, blur, colour conversion) on ``threads`` threads each.

    By default each process's OpenCV spreads over every core: with one process per core that
    only adds contention (0 keeps both libraries' defaults).
    """
    if threads > 0:
        cv2.setNumThreads(threads)
    models = get_settings().models.model_copy(update={"intra_op_threads": threads})
    return build_configured_detector(models)


def worker_identity() -> str:
    """The actor name recorded in the ledger: a service role, host and pid, never a person."""
    return f"worker@{socket.gethostname()}:{os.getpid()}"
