"""Decode refuses what it cannot safely process; encode writes pixels and nothing else."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from workers.imageio import BadInputError, decode_image, encode_image, sniff_image_format

LIMIT = 80_000_000


def _frame(height: int = 60, width: int = 80) -> NDArray[np.uint8]:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return np.asarray(cv2.GaussianBlur(frame, (5, 5), 0))


def _jpeg(frame: NDArray[np.uint8]) -> bytes:
    return bytes(cv2.imencode(".jpg", frame)[1])


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _with_exif(jpeg: bytes, orientation: int) -> bytes:
    """A JPEG with a hand-written APP1 EXIF segment: Orientation plus a GPS IFD pointer."""
    entries = [(0x0112, 3, 1, orientation << 16), (0x8825, 4, 1, 0)]  # big-endian SHORT padding
    ifd = struct.pack(">H", len(entries))
    ifd += b"".join(struct.pack(">HHII", *entry) for entry in entries) + struct.pack(">I", 0)
    tiff = b"MM\x00*" + struct.pack(">I", 8) + ifd
    body = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def test_sniff_by_content() -> None:
    assert sniff_image_format(_jpeg(_frame())) == "jpeg"
    assert sniff_image_format(bytes(cv2.imencode(".png", _frame())[1])) == "png"
    assert sniff_image_format(bytes(cv2.imencode(".bmp", _frame())[1])) == "bmp"
    assert sniff_image_format(b"GIF89a....") == "gif"
    assert sniff_image_format(b"RIFF\x00\x00\x00\x00AVI LIST") is None  # a video


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (np.random.default_rng(1).bytes(4096), "not a supported image"),
        (b"<html><body>nope</body></html>", "the content is plain text"),
    ],
)
def test_refuses_non_images(data: bytes, message: str) -> None:
    with pytest.raises(BadInputError, match=message) as refused:
        decode_image(data, LIMIT)
    assert "<html>" not in str(refused.value)  # the reason names the kind, not the bytes


@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_refuses_truncated_jpeg(keep: float) -> None:
    data = _jpeg(_frame(200, 200))
    with pytest.raises(BadInputError, match="truncated|corrupt"):
        decode_image(data[: int(len(data) * keep)], LIMIT)


def test_refuses_pixel_bomb_png_from_header() -> None:
    """A 60-byte PNG declaring 30000x30000 is refused before any pixel is allocated."""
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    bomb = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))
    with pytest.raises(BadInputError, match=r"30000x30000 = 900 MP, above the limit of 80 MP"):
        decode_image(bomb, LIMIT)


def test_pixel_limit_applies_to_jpeg_header() -> None:
    with pytest.raises(BadInputError, match="above the limit"):
        decode_image(_jpeg(_frame(100, 100)), max_pixels=9_999)
    assert decode_image(_jpeg(_frame(100, 100)), max_pixels=10_000).width == 100


def test_exif_orientation_is_applied() -> None:
    frame = np.zeros((40, 100, 3), np.uint8)
    frame[:, :20] = 255  # white band on the left
    decoded = decode_image(_with_exif(_jpeg(frame), orientation=6), LIMIT)
    # Orientation 6: rotate 90 degrees clockwise, so the band ends up on top.
    assert (decoded.height, decoded.width) == (100, 40)
    assert decoded.frame[:15].mean() > 200 and decoded.frame[30:].mean() < 50


def test_grey_alpha_and_16_bit_become_bgr_uint8() -> None:
    grey = bytes(cv2.imencode(".png", _frame()[:, :, 0])[1])
    rgba = bytes(cv2.imencode(".png", np.dstack([_frame(), np.full((60, 80), 128, np.uint8)]))[1])
    deep = bytes(cv2.imencode(".png", _frame().astype(np.uint16) * 257)[1])
    for data in (grey, rgba, deep):
        decoded = decode_image(data, LIMIT)
        assert decoded.frame.shape == (60, 80, 3) and decoded.frame.dtype == np.uint8
        assert decoded.format == "png"


def test_encoded_jpeg_carries_no_exif() -> None:
    source = _with_exif(_jpeg(_frame()), orientation=1)
    assert b"Exif" in source
    data, ext = encode_image(decode_image(source, LIMIT).frame, "jpeg", jpeg_quality=90)
    assert ext == "jpg" and data.startswith(b"\xff\xd8")
    assert b"Exif" not in data and b"\xff\xe1" not in data


def test_encoded_png_carries_no_text_chunks() -> None:
    png = bytes(cv2.imencode(".png", _frame())[1])
    tagged = png[:33] + _png_chunk(b"tEXt", b"GPS\x0052.1,4.3") + png[33:]
    decoded = decode_image(tagged, LIMIT)
    data, ext = encode_image(decoded.frame, decoded.format)
    assert ext == "png"
    for chunk in (b"tEXt", b"iTXt", b"zTXt", b"eXIf", b"iCCP"):
        assert chunk not in data
    assert b"52.1,4.3" not in data


def test_other_formats_are_written_as_png() -> None:
    data, ext = encode_image(_frame(), "webp")
    assert ext == "png" and sniff_image_format(data) == "png"
