"""Images OpenCV cannot read whole: frame sequences and HEIC/AVIF stills, through Pillow.

OpenCV decodes the first page of a TIFF and the first frame of an animated WebP or GIF and says
nothing of the rest, so a face on page 2 would be published. Here every frame is decoded,
and the pipeline redacts every one and re-encodes them in kind (:func:`encode_frames`), or the
image fails with a reason. HEIC (pillow-heif) and AVIF (Pillow) stills are decoded here into one
frame for the ordinary still path; animated HEIC/AVIF are refused.

Bounds, checked before pixels are decoded where the header allows: each frame's canvas and the
sum over all frames stay within the pixel limit (so that the frames held at once fit the memory
bound of an image at the limit: 3 bytes per pixel), and at most :data:`MAX_FRAMES` frames.
Errors name the kind of problem, never bytes of the input.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, ImageSequence

from workers.imageio import BadInputError, check_complete

Frame = NDArray[np.uint8]
MAX_FRAMES = 2000
SEQUENCE_FORMATS = frozenset({"tiff", "webp", "gif"})  # may hold several frames
_EXTENSIONS = {"tiff": "tif", "webp": "webp", "gif": "gif"}
CONTENT_TYPES = {"tif": "image/tiff", "webp": "image/webp", "gif": "image/gif"}
_PILLOW_FORMATS = {"tiff": "TIFF", "webp": "WEBP", "gif": "GIF", "heic": "HEIF", "avif": "AVIF"}


@dataclass
class DecodedFrames:
    frames: list[Frame]  # BGR, HxWx3, one per page or frame, in order
    format: str  # tiff | webp | gif
    durations_ms: list[int] = field(default_factory=list)
    loop: int | None = None


def _open(data: bytes, fmt: str) -> Image.Image:
    if fmt == "heic":
        from pillow_heif import register_heif_opener
        register_heif_opener()
    try:
        image = Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[fmt]])
    except Image.DecompressionBombError:
        raise BadInputError(f"{fmt} header declares an image above Pillow's safety limit") \
            from None
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many kinds on bad data
        raise BadInputError(f"corrupt or truncated {fmt} data: {_kind(exc)}") from None
    return image


def frame_count(data: bytes, fmt: str | None) -> int | None:
    """How many frames a TIFF, WebP or GIF holds: 1 for other formats, None when the count
    cannot be read (damaged data)."""
    if fmt not in SEQUENCE_FORMATS:
        return 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # size is checked against our limit, not Pillow's
            with _open(data, fmt) as image:
                return int(getattr(image, "n_frames", 1))
    except Exception:  # noqa: BLE001 - damaged: decode_frames will say how
        return None


def is_sequence(data: bytes, fmt: str | None) -> bool:
    """True when the image must go through :func:`decode_frames`: every GIF, and TIFF or WebP
    with more than one frame, or whose frames cannot be counted (so that damage after the first
    frame fails the image instead of OpenCV publishing the first frame alone)."""
    if fmt == "gif":
        return True
    count = frame_count(data, fmt)
    return fmt in SEQUENCE_FORMATS and (count is None or count > 1)


def output_extension_for(data: bytes, fmt: str | None) -> str | None:
    """The extension of the output when it is a sequence kept in kind, else None."""
    return _EXTENSIONS[fmt] if fmt and is_sequence(data, fmt) else None


def decode_still(data: bytes, fmt: str, max_pixels: int) -> Frame:
    """A HEIC or AVIF still as one BGR frame; refuses sequences and images above the limit.
    A decoder warning (a truncated read) fails the image, as for every format here."""
    with _strict_warnings(), _open(data, fmt) as image:
        frames = int(getattr(image, "n_frames", 1))
        if frames > 1:
            raise BadInputError(f"{fmt} holds {frames} images (a sequence or burst); only "
                                "single HEIC/AVIF images are supported")
        _check_size(image.size, fmt, max_pixels)
        return _to_bgr(image, fmt, 0)


def decode_frames(data: bytes, fmt: str, max_pixels: int) -> DecodedFrames:
    """Every frame of a TIFF, WebP or GIF, each as a full BGR frame (GIF and WebP frames come
    composited onto the canvas, as a viewer shows them)."""
    check_complete(data, fmt)
    decoded = DecodedFrames(frames=[], format=fmt)
    total = 0
    with _strict_warnings(), _open(data, fmt) as image:
        decoded.loop = image.info.get("loop")
        for index, frame in enumerate(_frames(image, fmt)):
            if index >= MAX_FRAMES:
                raise BadInputError(f"{fmt} has more than {MAX_FRAMES} frames; refused")
            width, height = _check_size(frame.size, fmt, max_pixels)
            total += width * height
            if total > max_pixels:
                raise BadInputError(
                    f"{fmt} frames hold {total / 1e6:.0f} MP or more in all (frame {index + 1}),"
                    f" above the limit of {max_pixels / 1e6:.0f} MP for one image")
            decoded.frames.append(_to_bgr(frame, fmt, index))
            decoded.durations_ms.append(int(frame.info.get("duration", 0) or 0))
    if not decoded.frames:
        raise BadInputError(f"{fmt} holds no frame")
    return decoded


@contextmanager
def _strict_warnings() -> Iterator[None]:
    """A decoder warning (Pillow's "Truncated File Read") raises, and so fails the image;
    Pillow's own size warning is left out: the pixel limit is ours and checked already."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _frames(image: Image.Image, fmt: str) -> Iterator[Image.Image]:
    try:
        yield from ImageSequence.Iterator(image)
    except BadInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many kinds on bad data
        raise BadInputError(f"corrupt or truncated {fmt} data: {_kind(exc)}") from None


def _check_size(size: tuple[int, int], fmt: str, max_pixels: int) -> tuple[int, int]:
    width, height = size
    if width <= 0 or height <= 0:
        raise BadInputError(f"{fmt} header declares an empty image ({width}x{height})")
    if width * height > max_pixels:
        raise BadInputError(f"image is {width}x{height} = {width * height / 1e6:.0f} MP, above "
                            f"the limit of {max_pixels / 1e6:.0f} MP")
    return width, height


def _to_bgr(frame: Image.Image, fmt: str, index: int) -> Frame:
    """Pixels of one frame, upright (EXIF orientation applied), as BGR uint8."""
    try:
        frame.load()
        upright = ImageOps.exif_transpose(frame) if fmt in ("tiff", "webp") else frame
        rgb = np.asarray(upright.convert("RGB"), np.uint8)
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many kinds on bad data
        raise BadInputError(f"corrupt or truncated {fmt} data: frame {index + 1} does not "
                            f"decode ({_kind(exc)})") from None
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _kind(exc: BaseException) -> str:
    """What went wrong, in words that carry no input bytes (decoder messages may quote them)."""
    text = str(exc).lower()
    if "truncated" in text or isinstance(exc, EOFError):
        return "the data ends early"
    if "cannot identify" in text:
        return "the decoder does not recognise it"
    return f"the decoder stopped ({type(exc).__name__})"


def gif_frames(frames: Sequence[Frame]) -> list[Image.Image]:
    """Each frame as GIF will store it: 256 colours. The guard checks these, not the arrays."""
    return [Image.fromarray(np.ascontiguousarray(f[:, :, ::-1])).quantize(256) for f in frames]


def published(frame: Image.Image) -> Frame:
    """A palette frame as the viewer sees it (BGR)."""
    return np.ascontiguousarray(np.asarray(frame.convert("RGB"), np.uint8)[:, :, ::-1])


def encode_frames(frames: Sequence[Frame] | Sequence[Image.Image], decoded: DecodedFrames
                  ) -> tuple[bytes, str]:
    """Every frame re-encoded in the input's kind, pixels only (no EXIF, ICC or XMP): TIFF
    pages with lossless deflate, animated WebP lossless, GIF with its frame durations and loop.
    Returns ``(data, extension)``."""
    images = [f if isinstance(f, Image.Image)
              else Image.fromarray(np.ascontiguousarray(f[:, :, ::-1])) for f in frames]
    out = io.BytesIO()
    first, rest = images[0], images[1:]
    if decoded.format == "tiff":
        first.save(out, "TIFF", save_all=True, append_images=rest, compression="tiff_deflate")
    elif decoded.format == "webp":
        first.save(out, "WEBP", save_all=True, append_images=rest, lossless=True,
                   duration=_durations(decoded), loop=decoded.loop or 0)
    else:
        loop = {} if decoded.loop is None else {"loop": decoded.loop}  # none: plays once
        first.save(out, "GIF", save_all=True, append_images=rest, duration=_durations(decoded),
                   disposal=1, optimize=False, **loop)
    return out.getvalue(), _EXTENSIONS[decoded.format]


def _durations(decoded: DecodedFrames) -> list[int] | int:
    durations = [d or 100 for d in decoded.durations_ms]
    return durations if len(durations) > 1 else durations[0]
