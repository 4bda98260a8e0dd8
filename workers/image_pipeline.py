"""One image through every stage: decode, detect, redact, encode.

The single plain function behind both the Celery image task and the in-process ``veil redact``;
it touches no service. It fails closed: any error raises, and nothing is returned that did not
go through detection and redaction. :class:`~workers.imageio.BadInputError` means the input is at
fault and retrying is pointless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.policy import Policy
from workers.detectors.base import Detection, Detector
from workers.imageio import decode_image, encode_image
from workers.redaction import redact

CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png"}


@dataclass
class ImageResult:
    data: bytes
    ext: str
    content_type: str
    width: int
    height: int
    detections: list[Detection]
    model_version: str
    params: dict[str, Any]  # detector, redaction and encoder settings, for the ledger


def redact_image_bytes(data: bytes, policy: Policy, detector: Detector,
                       max_pixels: int) -> ImageResult:
    image = decode_image(data, max_pixels)
    wanted = set(policy.classes)
    detections = [d for d in detector.detect(image.frame) if d.cls in wanted]
    redacted = redact(image.frame, detections, policy.redaction)
    encoded, ext = encode_image(redacted, image.format, policy.jpeg_quality)
    encoder: dict[str, Any] = {"format": ext}
    if ext == "jpg":
        encoder["jpeg_quality"] = policy.jpeg_quality
    return ImageResult(
        data=encoded,
        ext=ext,
        content_type=CONTENT_TYPES[ext],
        width=image.width,
        height=image.height,
        detections=detections,
        model_version=detector.model_version,
        params={
            "detector": {"key": detector.key, **detector.params},
            "redaction": policy.redaction.model_dump(mode="json"),
            "encoder": encoder,
        },
    )
