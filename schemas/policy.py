"""Redaction and retention policies.

Policies are declared in one TOML file that operators edit (see ``infra/assets/policies.toml``);
this module only validates the parsed text. A policy is chosen at ingest and recorded, with its
version, on the source, so a later edit never changes what an old job promised.
"""

from __future__ import annotations

import re
import tomllib
from typing import Literal

from pydantic import BaseModel, Field, field_validator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int | float) -> int:
    """Seconds from ``30d``, ``12h``, ``10s``, ``90m``, ``2w`` or a plain number of seconds."""
    if isinstance(text, int | float):
        seconds = int(text)
    else:
        match = _DURATION.match(text)
        if not match:
            raise ValueError(f"not a duration: {text!r} (use e.g. 30d, 12h, 90m, 10s)")
        seconds = int(float(match.group(1)) * _UNIT_S[match.group(2)])
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {text!r}")
    return seconds


class RedactionParams(BaseModel):
    """How detected regions are destroyed.

    ``pixelate`` is accepted but weak: mosaics of faces can be partly reversed by learned models.
    ``blur`` scales its kernel with the box so that a face of any size loses its identity.
    """

    method: Literal["blur", "fill", "pixelate"] = "blur"
    mask: Literal["box", "ellipse"] = "box"
    box_scale: float = Field(default=1.3, ge=1.0, le=3.0)
    fill_color: tuple[int, int, int] = (0, 0, 0)

    @property
    def weak(self) -> bool:
        return self.method == "pixelate"


class Policy(BaseModel):
    name: str
    version: int = 1
    description: str = ""
    raw_retention_s: int
    redacted_retention_s: int | None = None
    work_retention_s: int = 86400
    audio: Literal["drop", "keep"] = "drop"
    classes: list[Literal["face", "plate", "text", "custom"]] = ["face"]
    redaction: RedactionParams = Field(default_factory=RedactionParams)
    chunk_seconds: float = 10.0
    jpeg_quality: int = Field(default=92, ge=50, le=100)

    @field_validator("raw_retention_s", "work_retention_s", mode="before")
    @classmethod
    def _duration(cls, value: str | int) -> int:
        return parse_duration(value)

    @field_validator("redacted_retention_s", mode="before")
    @classmethod
    def _optional_duration(cls, value: str | int | None) -> int | None:
        return None if value in (None, "", "keep") else parse_duration(value)  # type: ignore[arg-type]


def parse_policies(text: str) -> dict[str, Policy]:
    """Parse the policies file: one ``[policies.NAME]`` table per policy."""
    data = tomllib.loads(text)
    tables = data.get("policies", {})
    if not tables:
        raise ValueError("the policies file declares no [policies.NAME] table")
    return {name: Policy(name=name, **body) for name, body in tables.items()}
