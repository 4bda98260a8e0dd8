"""Media type detection by content (magic bytes), never by file extension. Pure logic."""

from __future__ import annotations

from typing import Literal

MediaKind = Literal["image", "video"]

# format -> canonical extension of files Veil writes or stores
EXTENSIONS: dict[str, str] = {
    "jpeg": "jpg", "png": "png", "webp": "webp", "bmp": "bmp", "tiff": "tif", "gif": "gif",
    "heic": "heic", "avif": "avif",
    "mp4": "mp4", "mov": "mov", "mkv": "mkv", "avi": "avi", "mpegts": "ts",
}

# ISO-BMFF brands of still images (HEIF/AVIF); everything else with an ``ftyp`` box is video.
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm",
                          b"hevs", b"mif1", b"msf1"})


def sniff(data: bytes) -> tuple[MediaKind, str] | None:
    """(kind, format) from the first bytes, or None when the content is not recognised."""
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return "image", "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video", "avi"
    if head.startswith(b"BM") and len(head) >= 26:
        return "image", "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image", "tiff"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image", "gif"
    if head[4:8] == b"ftyp":
        return _iso_bmff(head)
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video", "mkv"
    if len(data) > 376 and data[0] == 0x47 and data[188] == 0x47 and data[376] == 0x47:
        return "video", "mpegts"
    return None


def extension_for(fmt: str | None) -> str:
    return EXTENSIONS.get(fmt or "", "bin")


def _iso_bmff(head: bytes) -> tuple[MediaKind, str]:
    """HEIC or AVIF by the major or a compatible brand of the ``ftyp`` box, else MP4/MOV.

    AVIF files often declare ``mif1`` (the generic HEIF brand) as major brand and ``avif``
    among the compatible ones, so AVIF is looked for first in all of them.
    """
    size = int.from_bytes(head[:4], "big")
    brands = [head[8:12]] + [head[i:i + 4] for i in range(16, min(size, len(head)) - 3, 4)]
    if any(b in _AVIF_BRANDS for b in brands):
        return "image", "avif"
    if head[8:12] in _HEIC_BRANDS:
        return "image", "heic"
    return "video", "mov" if head[8:12] == b"qt  " else "mp4"
