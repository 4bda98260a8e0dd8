"""Builders of test inputs with known hazards: GPS in EXIF, text in PNG, EXIF rotation, bombs."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
from PIL import Image, PngImagePlugin


def jpeg_with_gps(bgr: np.ndarray) -> bytes:
    img = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (52.0, 31.0, 12.0)
    gps[3], gps[4] = "E", (13.0, 24.0, 36.0)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92, exif=exif.tobytes())
    return buf.getvalue()


def jpeg_with_orientation(bgr: np.ndarray, orientation: int) -> bytes:
    img = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92, exif=exif.tobytes())
    return buf.getvalue()


def png_with_text(bgr: np.ndarray) -> bytes:
    img = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    info = PngImagePlugin.PngInfo()
    info.add_text("Location", "Secret Street 1")
    info.add_itxt("Author", "Jane Roe")
    buf = io.BytesIO()
    img.save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A valid-looking PNG of a few hundred bytes that declares width x height pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = b"\x00" + b"\x00" * (width * 3)
    idat = zlib.compress(row * 4, 9)  # a few rows: enough for a decoder to start allocating
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def has_exif(data: bytes) -> bool:
    return b"Exif\x00\x00" in data


def png_text_chunks(data: bytes) -> list[bytes]:
    """Names of tEXt/iTXt/zTXt/eXIf/iCCP chunks in a PNG."""
    found, pos = [], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind in (b"tEXt", b"iTXt", b"zTXt", b"eXIf", b"iCCP"):
            found.append(kind)
        pos += 12 + length
    return found
