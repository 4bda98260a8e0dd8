"""Decode and encode still images: the first and last stages of an image job.

Hazards handled here, because every later stage trusts the frame it gets:

* Decompression bombs. The pixel count is read from the file header and checked against the
  limit *before* OpenCV allocates anything, so a 100-byte PNG that declares 30000x30000 costs
  nothing.
* Truncated files. Some decoders fill a missing tail with grey and report success; a JPEG
  without its end marker or a PNG without ``IEND`` is refused instead of redacting half an image.
  Concealed damage (a JPEG cut short with an end marker appended) is seen only by the decoder,
  which warns on stderr and fills the rest grey: those warnings are captured and fail the image
  (:mod:`workers.jpeg_warnings`).
* Several frames. Multi-page TIFF, animated WebP and every GIF go through
  :mod:`workers.image_frames` (every frame redacted, re-encoded in kind); HEIC and AVIF stills
  are decoded there too. OpenCV would read the first frame only.
* Errors name the kind of problem, never bytes of the input (a text file's first bytes can be a
  person's name).
* Orientation. OpenCV (4.x and 5.x) applies the EXIF orientation tag on ``IMREAD_COLOR`` for
  JPEG, PNG, WebP and TIFF; the tests pin that behaviour, so detection sees the picture as a
  person would and the output needs no orientation tag.
* Metadata. :func:`encode_image` writes pixels only: no EXIF, GPS, XMP, IPTC, ICC profile or PNG
  text chunk can survive re-encoding.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from schemas.media import sniff
from workers.jpeg_warnings import jpeg_decoder_warnings


class BadInputError(Exception):
    """Permanent failure caused by the input itself; retrying cannot help."""


@dataclass
class DecodedImage:
    frame: NDArray[np.uint8]  # BGR, HxWx3
    format: str  # jpeg | png | webp | bmp | tiff | heic | avif
    width: int
    height: int


_OPENCV = frozenset({"jpeg", "png", "webp", "bmp", "tiff"})
_DECODABLE = _OPENCV | {"gif", "heic", "avif"}
SUPPORTED = "JPEG, PNG, WebP, BMP, TIFF, GIF, HEIC, AVIF"
_LOSSY_STILLS = frozenset({"jpeg", "heic", "avif"})


def output_extension(fmt: str | None) -> str:
    """The extension Veil writes for a still of an input format: JPEG stays JPEG (and lossy
    HEIC and AVIF stills become JPEG), the rest become PNG. Frame sequences keep their format
    (:func:`workers.image_frames.output_extension_for`)."""
    return "jpg" if fmt in _LOSSY_STILLS else "png"

# Start-of-frame markers carry the dimensions; C4 (DHT), C8 (JPG) and CC (DAC) do not.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def sniff_image_format(data: bytes) -> str | None:
    """The decodable image format from its magic bytes (never from a file name), or None."""
    found = sniff(data)
    return found[1] if found and found[1] in _DECODABLE else None


def decode_image(data: bytes, max_pixels: int) -> DecodedImage:
    """Decode ``data`` into a BGR frame, refusing anything not safe to process.

    Raises :class:`BadInputError` with a message meant for a person.
    """
    if not data:
        raise BadInputError("the file is empty (0 bytes)")
    fmt = sniff_image_format(data)
    if fmt is None:
        raise BadInputError(
            f"not a supported image (the content is {_describe(data)}); supported: {SUPPORTED}")
    if fmt not in _OPENCV:
        from workers.image_frames import decode_still
        still = decode_still(data, fmt, max_pixels)
        return DecodedImage(frame=still, format=fmt, width=still.shape[1], height=still.shape[0])
    width, height = _header_size(data, fmt)
    if width <= 0 or height <= 0:
        raise BadInputError(f"{fmt} header declares an empty image ({width}x{height})")
    if width * height > max_pixels:
        raise BadInputError(
            f"image is {width}x{height} = {width * height / 1e6:.0f} MP, above the limit of "
            f"{max_pixels / 1e6:.0f} MP"
        )
    check_complete(data, fmt)
    frame: Any
    if fmt == "jpeg":
        with jpeg_decoder_warnings() as warnings:
            frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if warnings.damage:
            raise BadInputError(f"corrupt jpeg: the decoder reports {warnings.damage}; the "
                                "missing part would be published grey")
    else:
        frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if frame is None or frame.size == 0:
        raise BadInputError(f"corrupt or truncated {fmt} data: the decoder could not read it")
    if frame.dtype != np.uint8:  # defensive: IMREAD_COLOR already converts 16-bit to 8-bit
        frame = cv2.convertScaleAbs(frame, alpha=255.0 / 65535.0)
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    elif frame.shape[2] == 4:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    bgr: NDArray[np.uint8] = np.ascontiguousarray(frame, dtype=np.uint8)
    return DecodedImage(frame=bgr, format=fmt, width=bgr.shape[1], height=bgr.shape[0])


def encode_image(frame: NDArray[np.uint8], fmt: str, jpeg_quality: int = 92) -> tuple[bytes, str]:
    """Encode pixels only; returns ``(data, extension)``.

    JPEG stays JPEG; every other format is written as PNG (lossless, and free of the metadata
    quirks of TIFF and WebP containers).
    """
    ext = output_extension(fmt)
    suffix = f".{ext}"
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if ext == "jpg" else []
    ok, buf = cv2.imencode(suffix, frame, params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {frame.shape} frame as {ext}")
    return buf.tobytes(), ext


def _describe(data: bytes) -> str:
    """The kind of content, never its bytes: a text file's first bytes may be a name."""
    head = data[:512]
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "plain text"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # a cut at the end of the sample is no proof
            return "binary data of an unknown kind"
    return "text" if b"\x00" not in head else "binary data of an unknown kind"


def _header_size(data: bytes, fmt: str) -> tuple[int, int]:
    try:
        return _HEADER_READERS[fmt](data)
    except (struct.error, IndexError, ValueError) as exc:
        raise BadInputError(f"truncated or corrupt {fmt} header ({exc})") from None


def _jpeg_size(data: bytes) -> tuple[int, int]:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError(f"expected a marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    raise ValueError("no frame header before the image data")


def _png_size(data: bytes) -> tuple[int, int]:
    if data[12:16] != b"IHDR":
        raise ValueError("first chunk is not IHDR")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8L":
        if len(data) < 25:
            raise ValueError("VP8L header cut short")
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise ValueError("VP8 start code missing")
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    raise ValueError("unknown WebP chunk type")


def _bmp_size(data: bytes) -> tuple[int, int]:
    (header_size,) = struct.unpack("<I", data[14:18])
    if header_size == 12:  # OS/2 BITMAPCOREHEADER
        width, height = struct.unpack("<HH", data[18:22])
        return width, height
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)  # negative height means top-down rows


def _tiff_size(data: bytes) -> tuple[int, int]:
    endian = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(endian + "I", data[4:8])
    (count,) = struct.unpack(endian + "H", data[ifd : ifd + 2])
    dims: dict[int, int] = {}
    for i in range(count):
        entry = data[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
        tag, kind = struct.unpack(endian + "HH", entry[:4])
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT (3) or LONG (4)
            fmt = endian + ("H" if kind == 3 else "I")
            dims[tag] = struct.unpack(fmt, entry[8 : 8 + struct.calcsize(fmt)])[0]
    if 256 not in dims or 257 not in dims:
        raise ValueError("first IFD lacks width or height")
    return dims[256], dims[257]


_HEADER_READERS = {
    "jpeg": _jpeg_size,
    "png": _png_size,
    "webp": _webp_size,
    "bmp": _bmp_size,
    "tiff": _tiff_size,
}


def check_complete(data: bytes, fmt: str) -> None:
    """Refuse files whose tail is missing; decoders may pad them with grey silently."""
    # The last start-of-scan must be followed by an end marker (a thumbnail has its own pair).
    if fmt == "jpeg" and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        raise BadInputError("truncated jpeg: the end-of-image marker is missing")
    if fmt == "png" and data.rfind(b"IEND") < 0:
        raise BadInputError("truncated png: the IEND chunk is missing")
    if fmt == "webp":
        (riff_size,) = struct.unpack("<I", data[4:8])
        if len(data) < riff_size + 8:
            raise BadInputError(
                f"truncated webp: {len(data)} bytes of the {riff_size + 8} its header declares"
            )
