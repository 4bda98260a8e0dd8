"""Media type detection by content (magic bytes), never by file extension. Pure logic."""

from __future__ import annotations

from typing import Literal

MediaKind = Literal["image", "video"]

# format -> canonical extension of files Veil writes or stores
EXTENSIONS: dict[str, str] = {
    "jpeg": "jpg", "png": "png", "webp": "webp", "bmp": "bmp", "tiff": "tif", "gif": "gif",
    "mp4": "mp4", "mov": "mov", "mkv": "mkv", "avi": "avi", "mpegts": "ts",
}


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
        brand = head[8:12]
        return "video", "mov" if brand == b"qt  " else "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video", "mkv"
    if len(data) > 376 and data[0] == 0x47 and data[188] == 0x47 and data[376] == 0x47:
        return "video", "mpegts"
    return None


def extension_for(fmt: str | None) -> str:
    return EXTENSIONS.get(fmt or "", "bin")
