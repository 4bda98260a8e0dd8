"""A corpus of hostile and unusual inputs, generated at test time, with what each must end as.

Every entry is a file written into a folder (some under odd names, some as symbolic links) and
an expectation: a success whose output keeps the input's kind and has every frame's face
destroyed, or a failure whose reason matches a pattern. The pictures are the suite's synthetic
frames (a real face on a textured background, ``tests.videos.picture``), small enough that the
whole corpus runs in seconds; bombs are sized against ``LIMIT``, a pixel limit the tests set
low so that an image "just below the limit" costs little memory.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tests.media import png_bomb
from tests.videos import VideoSpec, face_box, make_video, picture

LIMIT = 2_000_000  # pixels: VEIL_LIMITS__MAX_IMAGE_PIXELS for the corpus runs
W, H = 320, 240
# First bytes of text files named .jpg: a person's name, which no error may repeat.
SECRETS = ("Johanna Mustermann", "Zoë Łukasiewicz-Smith", "Jean-Luc Secret")


@dataclass(frozen=True)
class Case:
    name: str  # file name in the corpus folder (bytes that are not UTF-8 allowed)
    data: bytes | None  # None: a symbolic link (see link_to)
    ok: bool
    reason: str = ""  # regex the failure reason must match
    ext: str = ""  # extension of a successful output
    frames: int = 1  # frames the output must hold, each with its face destroyed
    link_to: str = ""  # for links: "outside" (a secret file out of the folder) or a case name
    video: bool = False
    either: bool = False  # may end either way (a damaged video the decoder may conceal)
    faces: tuple[tuple[NDArray[np.uint8], tuple[int, int, int, int]], ...] = ()  # per frame


def _faces(count: int, seed: int) -> tuple[tuple[NDArray[np.uint8], tuple[int, int, int, int]],
                                           ...]:
    """Each frame of ``frames(count, seed)`` with the box of its face."""
    return tuple((f, face_box(seed * 5 + i * 7, W, H)) for i, f in enumerate(frames(count, seed)))


def frames(count: int, seed: int) -> list[NDArray[np.uint8]]:
    return [picture(seed * 5 + i * 7, W, H, seed) for i in range(count)]


def _pil(frame: NDArray[np.uint8]) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(frame[:, :, ::-1]))


def _save(fmt: str, pictures: list[NDArray[np.uint8]], **options: object) -> bytes:
    if fmt == "HEIF":
        from pillow_heif import register_heif_opener
        register_heif_opener()
    out = io.BytesIO()
    images = [_pil(f) for f in pictures]
    extra = {"save_all": True, "append_images": images[1:]} if len(images) > 1 else {}
    images[0].save(out, fmt, **extra, **options)  # type: ignore[arg-type]
    return out.getvalue()


def _jpeg(seed: int, progressive: bool = False) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, 90]
    if progressive:
        params += [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    return bytes(cv2.imencode(".jpg", frames(1, seed)[0], params)[1])


def _png(seed: int) -> bytes:
    return bytes(cv2.imencode(".png", frames(1, seed)[0])[1])


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _blank_png(width: int, height: int, salt: int) -> bytes:
    """A complete PNG of width x height black pixels: a few KB however large it declares."""
    rows = zlib.compress(b"".join(b"\x00" + bytes(width * 3) for _ in range(height)), 9)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return _salted(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", rows)
                   + _chunk(b"IEND", b""), salt)


def _salted(png: bytes, salt: int) -> bytes:
    """``png`` with a text chunk after IHDR that makes its bytes (so its raw key) unique."""
    return png[:33] + _chunk(b"tEXt", b"run\x00" + str(salt).encode()) + png[33:]


def _jpeg_declaring(width: int, height: int, seed: int) -> bytes:
    """A real JPEG whose frame header is patched to declare ``width`` x ``height``."""
    data = bytearray(_jpeg(seed))
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _concealed(data: bytes) -> bytes:
    return data[:len(data) // 2] + b"\xff\xd9"


def _corrupt_middle(data: bytes) -> bytes:
    """A marker and junk written over the middle of the entropy-coded data."""
    middle = len(data) // 2
    return data[:middle] + b"\xff\xd3" + bytes(range(64)) + data[middle + 66:]


def _video_without_video_stream(salt: int) -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        container.metadata["comment"] = str(salt)
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"  # type: ignore[attr-defined]
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):  # type: ignore[attr-defined]
                container.mux(packet)
        for packet in stream.encode(None):  # type: ignore[attr-defined]
            container.mux(packet)
    return out.getvalue()


def _video_zero_frames(salt: int) -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        container.metadata["comment"] = str(salt)
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"  # type: ignore[attr-defined]
        container.start_encoding()  # the header, with a video stream, and never a frame
    return out.getvalue()


def _corrupt_video(salt: int) -> bytes:
    """A short H.264 MP4 with junk written over its middle."""
    spec = VideoSpec(frames=12, width=96, height=64, seed=18, title=str(salt))
    data = bytearray(make_video(spec))
    middle = len(data) // 2
    data[middle:middle + 400] = np.random.default_rng(18).bytes(400)
    return bytes(data)


def _text(secret: str, salt: int) -> bytes:
    return f"{secret}\nSecret Street 1, 12345 Town\nborn 1970-01-01\nref {salt}\n".encode()


def cases(salt: int) -> list[Case]:
    """The corpus: 42 files of 38 kinds. ``salt`` makes every file's bytes this run's own:
    originals are stored under their sha256 in a bucket other test runs share, and one run's
    clean-up must not delete another's. (Only the empty file cannot be salted.)"""
    s = salt * 100  # picture seeds: the face moves, so every frame's bytes differ per run
    jpeg, png = _jpeg(s + 1), _png(s + 2)
    gif3 = _save("GIF", frames(3, s + 3), duration=120, loop=0)
    tiff3 = _save("TIFF", frames(3, s + 4), compression="tiff_deflate")
    webp3 = _save("WEBP", frames(3, s + 5), duration=100, loop=0, lossless=True)
    heic, avif = _save("HEIF", frames(1, s + 6)), _save("AVIF", frames(1, s + 7))
    truncated = "truncated|ends early|corrupt"
    return [
        Case("plain.jpg", jpeg, True, ext="jpg", faces=_faces(1, s + 1)),
        Case("plain.png", png, True, ext="png", faces=_faces(1, s + 2)),
        Case("cut.jpg", jpeg[:len(jpeg) // 2], False, "truncated jpeg"),
        Case("concealed.jpg", _concealed(jpeg), False, "corrupt jpeg: the decoder reports"),
        Case("concealed-progressive.jpg", _concealed(_jpeg(s + 8, progressive=True)), False,
             "corrupt jpeg: the decoder reports"),
        Case("corrupt-middle.jpg", _corrupt_middle(_jpeg(s + 9)), False, "corrupt jpeg"),
        Case("cut.png", png[:len(png) // 2], False, "truncated png"),
        Case("concealed.png", png[:len(png) // 2] + png[-12:], False, "corrupt or truncated png"),
        Case("bomb-above.png", _salted(png_bomb(1500, 1500), salt), False, "above the limit"),
        Case("bomb-below.png", _blank_png(1400, 1400, salt), True, ext="png"),
        Case("huge-declared.jpg", _jpeg_declaring(60000, 60000, s + 19), False, "above the limit"),
        Case("zero-size.png", _blank_png(1, 1, salt)[:16] + struct.pack(">II", 0, 0)
             + _blank_png(1, 1, salt)[24:], False, "empty image"),
        Case("empty.jpg", b"", False, "empty"),
        *(Case(f"note-{i}.jpg", _text(secret, salt), False, "not a supported image")
          for i, secret in enumerate(SECRETS)),
        Case("page.jpg", f"<html><body>{SECRETS[0]} {salt}</body></html>".encode(), False,
             "plain text"),
        Case("random.jpg", np.random.default_rng(salt).bytes(3000), False, "not a supported"),
        Case("animated.gif", gif3, True, ext="gif", frames=3, faces=_faces(3, s + 3)),
        Case("still.gif", _save("GIF", frames(1, s + 10)), True, ext="gif",
             faces=_faces(1, s + 10)),
        Case("cut.gif", gif3[:len(gif3) * 2 // 3], False, truncated),
        Case("pages.tif", tiff3, True, ext="tif", frames=3, faces=_faces(3, s + 4)),
        Case("cut.tif", tiff3[:len(tiff3) * 2 // 3], False, truncated),
        Case("animated.webp", webp3, True, ext="webp", frames=3, faces=_faces(3, s + 5)),
        Case("cut.webp", webp3[:len(webp3) // 2], False, "truncated webp"),
        Case("too-many-pixels.gif",
             _save("GIF", [np.full((1000, 1000, 3), (40 * i, salt % 256, 0), np.uint8)
                           for i in range(3)]),
             False, "frames hold .* above the limit"),
        Case("still.heic", heic, True, ext="jpg", faces=_faces(1, s + 6)),
        Case("still.avif", avif, True, ext="jpg", faces=_faces(1, s + 7)),
        Case("cut.heic", heic[:len(heic) // 2], False, truncated),
        Case("cut.avif", avif[:len(avif) // 2], False, truncated),
        Case("sequence.avif", _save("AVIF", frames(2, s + 11)), False, "holds 2 images"),
        Case("audio-only.mp4", _video_without_video_stream(salt), False, "video", video=True),
        Case("zero-frames.mp4", _video_zero_frames(salt), False, "video|frame|stream",
             video=True),
        Case("line\nbreak\x1b[31m.jpg", _jpeg(s + 12), True, ext="jpg",
             faces=_faces(1, s + 12)),
        Case("-starts-with-dash.jpg", _jpeg(s + 13), True, ext="jpg",
             faces=_faces(1, s + 13)),
        Case("n" * 246 + ".jpg", _jpeg(s + 14), True, ext="jpg", faces=_faces(1, s + 14)),
        # no extension: "x" * 255 + ".jpg" is over the name limit, the output name is cut
        Case("x" * 255, _jpeg(s + 15), True, ext="jpg", faces=_faces(1, s + 15)),
        Case(os.fsdecode(b"bad-utf8-\xff\xfe.jpg"), _jpeg(s + 16), True, ext="jpg",
             faces=_faces(1, s + 16)),
        Case("Ünïcødé 照片.jpg", _jpeg(s + 17), True, ext="jpg", faces=_faces(1, s + 17)),
        Case("link-out.jpg", None, False, "symbolic link to a target outside", link_to="outside"),
        Case("link-in.jpg", None, True, ext="jpg", link_to="plain.jpg",
             faces=_faces(1, s + 1)),
        Case("corrupt-middle.mp4", _corrupt_video(salt), False, "video|chunk|frame|decode",
             video=True, either=True),
    ]


def write_corpus(folder: Path, outside: Path, salt: int) -> list[Case]:
    """Write every case into ``folder``; the secret a link points at goes to ``outside``."""
    folder.mkdir(parents=True, exist_ok=True)
    outside.write_bytes(_text("Root Secret Person", salt))
    corpus = cases(salt)
    for case in corpus:
        path = folder / case.name
        if case.data is not None:
            path.write_bytes(case.data)
    for case in corpus:
        if case.link_to:
            target = outside if case.link_to == "outside" else folder / case.link_to
            (folder / case.name).symlink_to(target)
    return corpus


def secrets_in(text: str) -> list[str]:
    """Which of the text files' secrets (or the linked secret) appear in ``text``."""
    return [s for s in (*SECRETS, "Root Secret Person", "Secret Street") if s in text]


FrameReader = Callable[[bytes, str], list[NDArray[np.uint8]]]
