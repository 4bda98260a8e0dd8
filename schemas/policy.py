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


ClassName = Literal["face", "plate", "text", "custom"]
Method = Literal["blur", "fill", "pixelate"]
Mask = Literal["box", "ellipse"]


class ClassRedaction(BaseModel):
    """Per-class overrides of :class:`RedactionParams`; unset fields follow the policy's."""

    method: Method | None = None
    mask: Mask | None = None
    box_scale: float | None = Field(default=None, ge=1.0, le=3.0)
    fill_color: tuple[int, int, int] | None = None


class RedactionParams(BaseModel):
    """How detected regions are destroyed.

    ``pixelate`` is accepted but weak: mosaics of faces can be partly reversed by learned models.
    ``blur`` scales its kernel with the box so that a face of any size loses its identity.
    ``per_class`` changes any of these for one class, e.g. plates with a larger box.
    """

    method: Method = "blur"
    mask: Mask = "box"
    box_scale: float = Field(default=1.3, ge=1.0, le=3.0)
    fill_color: tuple[int, int, int] = (0, 0, 0)
    per_class: dict[ClassName, ClassRedaction] = Field(default_factory=dict)

    @property
    def weak(self) -> bool:
        methods = {self.method, *(o.method for o in self.per_class.values())}
        return "pixelate" in methods

    def for_class(self, cls: str) -> RedactionParams:
        """The parameters that apply to detections of ``cls`` (no ``per_class`` of their own)."""
        override = self.per_class.get(cls)  # type: ignore[call-overload]
        if override is None:
            return self.model_copy(update={"per_class": {}}) if self.per_class else self
        return self.model_copy(update={**override.model_dump(exclude_none=True),
                                       "per_class": {}})


class GuardParams(BaseModel):
    """The guard: the face detector runs again on every output before it is published
    (images: every output; video: sampled frames, see ``video_every_s``).

    A face re-found at ``threshold`` or above, on or near a redacted region (``weak``: the
    redaction was too light) or anywhere else (``miss``), stops the output as it is: with
    ``reredact`` the region is filled solid (weak) or redacted like any face (miss) and checked
    again, up to ``max_rounds`` times; with ``fail`` (or when the rounds run out) the job fails.
    """

    enabled: bool = True
    threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    on_failure: Literal["reredact", "fail"] = "reredact"
    max_rounds: int = Field(default=2, ge=1, le=5)
    # Video: one frame in this many seconds of the encoded chunk is checked (0: every frame). A
    # finding makes the chunk run again, a weak region filled along its track and the frames
    # around the finding that the fill did not reach checked as well (workers.video.frame_guard).
    video_every_s: float = Field(default=2.0, ge=0.0, le=3600.0)


class ReviewBand(BaseModel):
    """Scores in ``[low, high)`` are uncertain: redacted, and listed by ``veil review``."""

    low: float = Field(ge=0.0, le=1.0)
    high: float = Field(ge=0.0, le=1.0)


def _default_review() -> dict[ClassName, ReviewBand]:
    # Face scores below 0.2 are mostly background texture (kept for recall, not worth a
    # person's time); plate and text scores are mean map probabilities, 0.5 and up by design.
    return {"face": ReviewBand(low=0.2, high=0.5), "plate": ReviewBand(low=0.5, high=0.7),
            "text": ReviewBand(low=0.5, high=0.7)}


Art6Ground = Literal["consent", "contract", "legal_obligation", "vital_interests", "public_task",
                     "legitimate_interests"]
Art9Condition = Literal["explicit_consent", "employment_social_security", "vital_interests",
                        "not_for_profit_body", "made_public", "legal_claims",
                        "substantial_public_interest", "health_care", "public_health",
                        "archiving_research_statistics"]

ART6_TEXT: dict[str, str] = {
    "consent": "Art. 6(1)(a) consent", "contract": "Art. 6(1)(b) contract",
    "legal_obligation": "Art. 6(1)(c) legal obligation",
    "vital_interests": "Art. 6(1)(d) vital interests", "public_task": "Art. 6(1)(e) public task",
    "legitimate_interests": "Art. 6(1)(f) legitimate interests"}
ART9_TEXT: dict[str, str] = {
    "explicit_consent": "Art. 9(2)(a) explicit consent",
    "employment_social_security": "Art. 9(2)(b) employment and social security",
    "vital_interests": "Art. 9(2)(c) vital interests",
    "not_for_profit_body": "Art. 9(2)(d) not-for-profit body",
    "made_public": "Art. 9(2)(e) made public by the data subject",
    "legal_claims": "Art. 9(2)(f) legal claims", "substantial_public_interest":
    "Art. 9(2)(g) substantial public interest", "health_care": "Art. 9(2)(h) health or social care",
    "public_health": "Art. 9(2)(i) public health",
    "archiving_research_statistics": "Art. 9(2)(j) archiving, research or statistics"}


class LegalBasis(BaseModel):
    """The ground the controller relies on (GDPR Art. 6), and the Art. 9 condition where special
    categories (health, beliefs, ethnicity visible on camera...) are processed on purpose.

    ``consent`` makes every ingest under the policy name a live consent record (``--consent``);
    ``detail`` says what the ground rests on (the interest pursued and the balancing test, the
    law, the study), because a ground without its reasons does not survive an audit.
    """

    art6: Art6Ground
    art9: Art9Condition | None = None
    detail: str = Field(min_length=1)

    @property
    def needs_consent(self) -> bool:
        return self.art6 == "consent" or self.art9 == "explicit_consent"

    def describe(self) -> str:
        text = ART6_TEXT[self.art6]
        return f"{text}; {ART9_TEXT[self.art9]}" if self.art9 else text


class Policy(BaseModel):
    name: str
    version: int = 1
    description: str = ""
    # Accountability (Art. 5(2), 30): why, on what ground, and why kept this long. Required of
    # every policy in the policies file (parse_policies): a policy that cannot say why it
    # processes people's images must not process them. Optional here only for policies built in
    # code (tests, benchmarks), which never reach the ledger's record of processing unnoticed:
    # their sources show "not declared".
    purpose: str = ""
    legal_basis: LegalBasis | None = None
    retention_rationale: str = ""
    raw_retention_s: int
    redacted_retention_s: int | None = None
    work_retention_s: int = 86400
    audio: Literal["drop", "keep"] = "drop"
    # How long camera and capture time are kept (invariant 9: personal data in names). The file
    # name always goes with the raw original. "redacted": as long as the redacted output, so
    # access requests (`veil dsar`, by camera and time) can still find a person's recordings;
    # "raw": with the raw original, for policies whose outputs nobody asks about by time.
    capture_facts_kept_with: Literal["raw", "redacted"] = "redacted"
    classes: list[ClassName] = ["face"]
    redaction: RedactionParams = Field(default_factory=RedactionParams)
    guard: GuardParams = Field(default_factory=GuardParams)
    review: dict[ClassName, ReviewBand] = Field(default_factory=_default_review)
    chunk_seconds: float = Field(default=10.0, gt=0.0, le=600.0)
    # Video: x264 constant-rate factor (lower is better quality) and the long side frames are
    # scaled to for detection (0 = native size; boxes are mapped back to full resolution).
    video_crf: int = Field(default=23, ge=0, le=51)
    video_detect_long_side: int = Field(default=640, ge=0)
    # Video: every how many frames the whole frame is detected; the frames between are detected
    # only where they changed since (a static camera's motion gate, workers/video/motion.py).
    # 1 = every frame whole. The guard checks what is published either way.
    video_full_detect_every: int = Field(default=8, ge=1, le=250)
    jpeg_quality: int = Field(default=92, ge=50, le=100)

    @property
    def needs_consent(self) -> bool:
        return self.legal_basis is not None and self.legal_basis.needs_consent

    @property
    def legal_basis_text(self) -> str:
        return self.legal_basis.describe() if self.legal_basis else "not declared"

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
    policies = {name: Policy(name=name, **body) for name, body in tables.items()}
    for name, body in tables.items():
        missing = [k for k in ACCOUNTABILITY_KEYS if not body.get(k)]
        if missing:
            raise ValueError(f"policy {name!r} does not declare {', '.join(missing)}: every "
                             "policy says why it processes images, on what legal basis, and "
                             "why its retention periods are what they are")
    return policies


ACCOUNTABILITY_KEYS = ("purpose", "legal_basis", "retention_rationale")
