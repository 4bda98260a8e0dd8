"""Cameras from inbox keys: ``<camera>/...`` names the camera, the cameras file says what it gets.

The cameras file (TOML, setting ``VEIL_CAMERAS_FILE``) maps a camera to its policy, its time
zone (for EXIF times written without an offset, which cameras do when they know only local
time) and where its capture time comes from (``metadata``: the file's own, else the upload
time; ``upload``: the upload time, for cameras whose clocks are not to be trusted)::

    [cameras.gate-north]
    policy = "default"
    timezone = "Europe/Berlin"
    capture_time = "metadata"

A camera the file does not name takes the default policy, or is refused when
``VEIL_WATCH__UNKNOWN_CAMERAS=refuse`` (its uploads stay in the inbox, reported, and are
ingested once the camera is added). A key with no folder has no camera: it is unknown too.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from infra.policies import UnknownPolicyError, get_policy
from infra.settings import Settings
from schemas.policy import Policy


class CamerasFileError(ValueError):
    """The cameras file cannot be used; the message names the file and what is wrong."""


class CameraRefused(Exception):
    """An upload from a camera the cameras file does not name, with unknown cameras refused."""


class _CameraEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str | None = None
    timezone: str | None = None
    capture_time: Literal["metadata", "upload"] = "metadata"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class _CamerasFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cameras: dict[str, _CameraEntry] = Field(default_factory=dict)


@dataclass(frozen=True)
class Camera:
    """What an upload from one camera is ingested with."""

    name: str | None
    policy: Policy
    timezone: tzinfo | None
    capture_time: Literal["metadata", "upload"]
    known: bool


class CameraBook:
    """The cameras file, loaded and checked once (policies and zones resolved up front, so a
    typo fails at start-up with the file's name, not at the first upload)."""

    def __init__(self, settings: Settings) -> None:
        self._refuse = settings.watch.unknown_cameras == "refuse"
        self._default = _policy(None, settings, "default policy")
        self._cameras = {name: Camera(name, _policy(entry.policy, settings, f"camera {name!r}"),
                                      ZoneInfo(entry.timezone) if entry.timezone else None,
                                      entry.capture_time, True)
                         for name, entry in _read(settings.cameras_file).items()}

    def __len__(self) -> int:
        return len(self._cameras)

    def for_key(self, key: str, prefix: str = "") -> Camera:
        """The camera an inbox key belongs to; raises :class:`CameraRefused` for an unknown one
        when unknown cameras are refused."""
        name = camera_from_key(key, prefix)
        camera = self._cameras.get(name or "")
        if camera is not None:
            return camera
        if self._refuse:
            raise CameraRefused(f"camera {name!r} is not in the cameras file and unknown "
                                "cameras are refused (VEIL_WATCH__UNKNOWN_CAMERAS)")
        return Camera(name, self._default, None, "metadata", False)


def camera_from_key(key: str, prefix: str = "") -> str | None:
    """``gate-north/2024/05/img.jpg`` -> ``gate-north``; a key without a folder -> None."""
    rest = key.removeprefix(prefix).lstrip("/")
    head, sep, _ = rest.partition("/")
    return head if sep and head else None


def _read(path: Path | None) -> dict[str, _CameraEntry]:
    if path is None:
        return {}
    try:
        return _CamerasFile.model_validate(tomllib.loads(path.read_text())).cameras
    except OSError as exc:
        raise CamerasFileError(f"cameras file {path}: cannot read it ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise CamerasFileError(f"cameras file {path}: not valid TOML ({exc})") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise CamerasFileError(f"cameras file {path}: {problems}") from exc


def _policy(name: str | None, settings: Settings, what: str) -> Policy:
    try:
        return get_policy(name, settings)
    except UnknownPolicyError as exc:
        raise CamerasFileError(f"cameras file {settings.cameras_file}: {what}: {exc}") from exc
