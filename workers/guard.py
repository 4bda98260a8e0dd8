"""The guard: no output is published while the face detector still finds a face in it.

After redaction the face detector runs again, on the *output*. A face it finds at or above the
policy's ``guard.threshold`` is either

* ``weak``: on or near a region that was redacted (the redaction left it recognisable enough to
  be found again), or
* ``miss``: anywhere else (the first pass missed it; blurring nearby faces can change what the
  detector sees).

Either way the output is not published as it is. With ``on_failure = "reredact"`` a weak region
is filled solid (the strongest method) over the union of the re-found face and the region, and a
missed face is redacted like any face and added to the detections; then the output is checked
again, up to ``max_rounds`` re-redactions. With ``"fail"``, or when the rounds run out, the job
fails with :class:`GuardFailure` (permanent: the original stays in `raw` for a person to see).

:func:`check` is the plain test, used on video frames (``workers.video.frame_guard``, which
passes ``detect``: frames are checked at the size they are detected at); :func:`enforce` is the
policy, used by the image pipeline on every output. The report goes into the artifact's
parameters in the ledger, with the time it cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from schemas.policy import Policy, RedactionParams
from workers.detectors.base import Detection, Detector
from workers.redaction import enlarge_box, redact, redacted_region
from workers.reliability import PermanentJobError

Frame = NDArray[np.uint8]
Box = tuple[float, float, float, float]
Detect = Callable[[Frame], Sequence[Detection]]

NEAR = 1.5  # a redacted region grown by this factor still counts as "near"
OVERLAP = 0.25  # share of a re-found face's box inside a (grown) region that makes it "weak"
_FILL = RedactionParams(method="fill", box_scale=1.0)


class GuardFailure(PermanentJobError):
    """A face is still visible in an output that the policy does not allow to re-redact."""


@dataclass(frozen=True)
class Finding:
    kind: Literal["weak", "miss"]
    score: float
    box: Box


@dataclass
class GuardReport:
    action: Literal["skipped", "passed", "reredacted", "failed"]
    threshold: float = 0.0
    checks: int = 0  # detector passes over outputs
    found: list[Finding] = field(default_factory=list)  # what the first check found
    remaining: list[Finding] = field(default_factory=list)  # what the last check found
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["weak"] = sum(f.kind == "weak" for f in self.found)
        data["miss"] = sum(f.kind == "miss" for f in self.found)
        data["seconds"] = round(self.seconds, 4)
        return data


def check(frame_out: Frame, detections: Sequence[Detection], detector: Detector,
          threshold: float, redaction: RedactionParams | None = None,
          detect: Detect | None = None) -> list[Finding]:
    """Faces the detector still finds in ``frame_out`` at ``threshold`` or above.

    ``detections`` are those that were redacted (their boxes before enlargement) and
    ``redaction`` the parameters used, which set how far each region reached. ``detect``
    replaces the plain full-size pass of ``detector``.
    """
    redaction = redaction or RedactionParams()
    height, width = frame_out.shape[:2]
    findings = []
    faces = detect(frame_out) if detect else detector.detect_batch([frame_out],
                                                                   classes={"face"})[0]
    for face in faces:
        if face.score < threshold:
            continue
        weak = bool(regions_under(face.box, detections, redaction, width, height))
        findings.append(Finding("weak" if weak else "miss", round(face.score, 4), face.box))
    return findings


def enforce(frame_out: Frame, detections: Sequence[Detection], detector: Detector,
            policy: Policy, render: Callable[[Frame], Frame] | None = None
            ) -> tuple[Frame, list[Detection], GuardReport]:
    """Check ``frame_out`` and act per ``policy.guard``.

    ``render`` turns a frame into what a viewer of the output will see (for JPEG: encode and
    decode again). The check runs on that, not on the frame in memory: compression noise moves
    detector scores by a few hundredths, enough to cross the threshold (measured: 2 % of
    faces-dev outputs checked clean in memory and were re-found in the published JPEG).

    Returns the output to publish (re-redacted if needed), the detections the guard added
    (missed faces), and the report. Raises :class:`GuardFailure` when a face stays visible.
    """
    params = policy.guard
    if not params.enabled or "face" not in policy.classes:
        return frame_out, [], GuardReport("skipped")
    started = time.perf_counter()
    view = render or (lambda frame: frame)
    report = GuardReport("passed", threshold=params.threshold)
    redacted = list(detections)
    added: list[Detection] = []
    findings = check(view(frame_out), redacted, detector, params.threshold, policy.redaction)
    report.checks, report.found = 1, findings
    while findings:
        if params.on_failure == "fail" or report.checks > params.max_rounds:
            report.action, report.remaining = "failed", findings
            report.seconds = time.perf_counter() - started
            worst = max(findings, key=lambda f: f.score)
            raise GuardFailure(
                f"guard: a face is still visible after redaction ({len(findings)} found, "
                f"best score {worst.score:.2f}, {worst.kind}; policy {policy.name} "
                f"on_failure={params.on_failure}, {report.checks - 1} re-redactions); "
                "the output was not published")
        frame_out = _reredact(frame_out, findings, redacted, policy.redaction)
        missed = [Detection("face", f.score, f.box) for f in findings if f.kind == "miss"]
        added += missed
        redacted += missed
        report.action = "reredacted"
        findings = check(view(frame_out), redacted, detector, params.threshold,
                         policy.redaction)
        report.checks += 1
    report.seconds = time.perf_counter() - started
    return frame_out, added, report


def _reredact(frame: Frame, findings: Sequence[Finding], redacted: Sequence[Detection],
              redaction: RedactionParams) -> Frame:
    missed = [Detection("face", f.score, f.box) for f in findings if f.kind == "miss"]
    frame = redact(frame, missed, redaction)
    height, width = frame.shape[:2]
    fills = [fill_region(f, redacted, redaction, width, height)
             for f in findings if f.kind == "weak"]
    return fill(frame, fills)


def fill_region(finding: Finding, redacted: Sequence[Detection], redaction: RedactionParams,
                width: int, height: int) -> Detection:
    """What a weak finding fills: its face box (grown like any face) joined with every redacted
    region it lies on."""
    box = enlarge_box(finding.box, redaction.for_class("face").box_scale, width, height)
    for region in regions_under(finding.box, redacted, redaction, width, height):
        box = (min(box[0], region[0]), min(box[1], region[1]),
               max(box[2], region[2]), max(box[3], region[3]))
    return Detection("face", finding.score, tuple(map(float, box)))  # type: ignore[arg-type]


def regions_under(box: Box, redacted: Sequence[Detection], redaction: RedactionParams,
                  width: int, height: int) -> list[tuple[int, int, int, int]]:
    """The redacted regions (each detection's box as the redaction grew it) that ``box`` lies
    on: the rule that makes a finding ``weak``."""
    return [redacted_region(d, redaction, width, height) for d in redacted
            if _inside_share(box, redacted_region(d, redaction, width, height, NEAR)) >= OVERLAP]


def fill(frame: Frame, regions: Sequence[Detection]) -> Frame:
    """``frame`` with each region filled solid (regions are final: not grown again)."""
    return redact(frame, regions, _FILL) if regions else frame


def _inside_share(box: Box, region: tuple[int, int, int, int] | Box) -> float:
    """The share of ``box``'s area that lies inside ``region``."""
    w = max(0.0, min(box[2], region[2]) - max(box[0], region[0]))
    h = max(0.0, min(box[3], region[3]) - max(box[1], region[1]))
    area = max(1e-6, (box[2] - box[0]) * (box[3] - box[1]))
    return w * h / area
