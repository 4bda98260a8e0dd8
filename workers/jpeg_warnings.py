"""libjpeg's warnings about damaged data, which OpenCV prints to stderr and otherwise ignores.

A JPEG cut short with an end-of-image marker appended decodes "successfully": libjpeg warns
(``Corrupt JPEG data: premature end of data segment``, ``Premature end of JPEG file``) and
fills the missing blocks grey. OpenCV gives no API for those warnings; libjpeg's default
message handler writes them to file descriptor 2. :func:`jpeg_decoder_warnings` points fd 2 at
a temporary file for the duration of one decode, keeps the damage warnings and writes every
other line back to the real stderr, so nothing another thread logged meanwhile is lost.

Warnings that do not mean lost pixels (``N extraneous bytes before marker``: padding some
cameras write) are passed through, not counted as damage.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

_DAMAGE = ("premature end", "corrupt jpeg data", "bad huffman code", "instead of rst",
           "invalid", "unsupported marker", "must resync")
_HARMLESS = ("extraneous bytes",)


@dataclass
class JpegWarnings:
    damage: str | None = None  # the first damage warning, lower-cased, or None


def classify(text: str) -> str | None:
    """The first line of libjpeg output that means damaged image data, or None."""
    for line in text.splitlines():
        lowered = line.strip().lower()
        if any(h in lowered for h in _HARMLESS):
            continue
        if any(d in lowered for d in _DAMAGE):
            return lowered.rstrip(".")
    return None


@contextmanager
def jpeg_decoder_warnings() -> Iterator[JpegWarnings]:
    """Capture what the decoder writes to fd 2 inside the block; see the module docstring."""
    found = JpegWarnings()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield found
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read(64 * 1024).decode("utf-8", "replace")
            found.damage = classify(text)
            kept = [line for line in text.splitlines(keepends=True)
                    if classify(line) is None and not _is_libjpeg(line)]
            if kept:
                sys.stderr.write("".join(kept))


def _is_libjpeg(line: str) -> bool:
    return any(h in line.lower() for h in _HARMLESS)
