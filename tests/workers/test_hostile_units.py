"""Pure pieces behind the hostile-input rules: sniffing HEIC/AVIF, libjpeg's damage warnings,
frame sequences, centerface's bounded inference runs, names and escapes, and the memory bound's
agreement with the pixel limit."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from infra.broker import celery_config
from infra.settings import IMAGE_BASE_MB, IMAGE_BYTES_PER_PIXEL, LimitSettings, Settings
from producer.cli_jobs import printable
from producer.redact_local import fit_name
from producer.scanning import display_name
from schemas.media import sniff
from workers.detectors.centerface import CenterFaceConfig, CenterFaceDetector
from workers.image_frames import frame_count, is_sequence
from workers.imageio import BadInputError, decode_image
from workers.jpeg_warnings import classify


def _still(fmt: str, frames: int = 1) -> bytes:
    if fmt == "HEIF":
        from pillow_heif import register_heif_opener
        register_heif_opener()
    images = [Image.new("RGB", (64, 48), (40 * i, 90, 140)) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, fmt, save_all=frames > 1, append_images=images[1:])
    return out.getvalue()


def test_heic_and_avif_are_images_not_video() -> None:
    assert sniff(_still("AVIF")) == ("image", "avif")
    assert sniff(_still("HEIF")) == ("image", "heic")
    # an MP4 keeps going to the video path
    assert sniff(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2") == ("video", "mp4")


def test_heic_and_avif_stills_decode_upright_bgr() -> None:
    for fmt in ("AVIF", "HEIF"):
        image = decode_image(_still(fmt), 80_000_000)
        assert image.frame.shape == (48, 64, 3) and image.frame.dtype == np.uint8


def test_sequences_are_counted_and_a_damaged_count_is_a_sequence() -> None:
    tiff = _still("TIFF", frames=3)
    assert frame_count(tiff, "tiff") == 3 and is_sequence(tiff, "tiff")
    assert not is_sequence(_still("TIFF"), "tiff")  # one page: the OpenCV path, as before
    assert is_sequence(_still("GIF"), "gif")  # every GIF, so it is written back as GIF
    # a TIFF cut after its first page cannot be counted: the frames path, which refuses it
    assert is_sequence(tiff[: len(tiff) * 2 // 3], "tiff")


def test_libjpeg_damage_warnings_are_told_from_harmless_ones() -> None:
    assert classify("Corrupt JPEG data: premature end of data segment\n")
    assert classify("Premature end of JPEG file\n")
    assert classify("Corrupt JPEG data: bad Huffman code\n")
    assert classify("Corrupt JPEG data: 3 extraneous bytes before marker 0xd9\n") is None
    assert classify("some other library's log line\n") is None


def test_unknown_content_is_described_by_kind_never_by_bytes() -> None:
    for data, kind in ((b"Max Mustermann, 1970\n", "plain text"),
                       ("Zoë Łukasiewicz\n".encode(), "text"),
                       (b"\x00\x01\x02Max\xff\xfe", "binary data")):
        with pytest.raises(BadInputError, match=kind) as refused:
            decode_image(data, 80_000_000)
        assert "Max" not in str(refused.value) and "Zo" not in str(refused.value)


def test_tiles_run_one_at_a_time_and_views_of_video_frames_still_batch() -> None:
    config = CenterFaceConfig()
    detector = object.__new__(CenterFaceDetector)  # views() needs the config only, no model
    detector.config = config
    tiles = [v for v in detector.views(8900, 8900) if v.factor == 1.0]
    assert tiles and max(v.x2 - v.x1 for v in tiles) <= config.tile_side
    # tiles cover the frame
    assert max(v.x2 for v in tiles) == 8900 and max(v.y2 for v in tiles) == 8900
    from workers.detectors.centerface import _runs
    one_tile = config.tile_side ** 2
    assert [len(r) for r in _runs(list(range(25)), one_tile, config.tile_side ** 2)] == [1] * 25
    # eight 1080p frames (padded to 1088) still run as one batch, as before
    assert [len(r) for r in _runs(list(range(8)), 1088 * 1920, config.tile_pixels)] == [8]


def test_names_fit_the_file_system_limit_and_print_on_one_line() -> None:
    assert fit_name("x" * 255, ".jpg") == "x" * 251 + ".jpg"
    cut = fit_name("é" * 200, "-1.jpg")  # 2 bytes each: cut on a character boundary
    assert len(cut.encode()) <= 255 and cut.endswith("-1.jpg") and "\ufffd" not in cut
    assert printable("a\nb\x1b[31mc\u202ed") == "a\\nb\\x1b[31mc\\u202ed"
    assert printable("Ünïcødé 照片.jpg") == "Ünïcødé 照片.jpg"
    assert display_name("bad-\udcff.jpg") == "bad-\\xff.jpg"


def test_pixel_limit_and_memory_bound_agree() -> None:
    limits = LimitSettings()
    needed = IMAGE_BASE_MB + limits.max_image_pixels * IMAGE_BYTES_PER_PIXEL / 1024**2
    assert needed <= limits.worker_max_memory_mb
    assert celery_config(Settings())["worker_max_memory_per_child"] == \
        limits.worker_max_memory_mb * 1024
    with pytest.raises(ValueError, match="lower the first or raise the second"):
        LimitSettings(max_image_pixels=200_000_000)
