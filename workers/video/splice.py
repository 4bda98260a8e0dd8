"""Re-encode only the GOPs a guard re-run changed, and copy the rest of the chunk as it was.

When the guard finds a face in an encoded chunk, the next run changes a few frames (a weak
region filled along its chain, a missed face redacted). Re-encoding the whole chunk for that
costs as much as the first pass's encode and redaction, and changes the bytes of every frame,
so every sampled frame would have to be checked again. Instead the next run re-encodes only the
groups of pictures (GOPs: a keyframe and the frames up to the next one) that hold a changed
frame, and this module splices them into the chunk, packet for packet.

Why that is exact: chunks are encoded without B-frames and every keyframe is an IDR, so no
frame refers across a keyframe; a re-encoded run of GOPs starts with an IDR at the same frame
as the GOP it replaces and ends where an untouched GOP begins with its own IDR. The segments are
encoded with the chunk's settings, so they share its H.264 parameter set (checked here, as
assembly checks it between chunks); the spliced chunk holds the same frames at the same times
(checked too). Anything else raises :class:`SpliceError`, and the caller re-encodes the whole
chunk instead.
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np
from numpy.typing import NDArray

from workers.video.encode import CHUNK_FORMAT, ChunkEncoder, EncoderSettings


class SpliceError(Exception):
    """The re-encoded GOPs cannot replace the old ones exactly; re-encode the whole chunk."""


@dataclass(frozen=True)
class SplicePlan:
    """The chunk as encoded (``base``) and the time ranges ``[start, end)`` (seconds; ``end``
    None: to the chunk's end) of the runs of GOPs to encode again."""

    base: bytes
    segments: list[tuple[Fraction, Fraction | None]]

    def segment_of(self, time: Fraction) -> int | None:
        """The position of the segment holding ``time``, or None: the frame is kept."""
        for position, (start, end) in enumerate(self.segments):
            if start <= time and (end is None or time < end):
                return position
        return None

    def rewrites(self, time: Fraction) -> bool:
        return self.segment_of(time) is not None


def plan_splice(base: bytes, changed: Iterable[Fraction]) -> SplicePlan:
    """The GOPs of ``base`` holding a frame at one of the ``changed`` times, merged into runs."""
    keys = [time for time, key in _packet_times(base) if key]
    if not keys:
        raise SpliceError("the encoded chunk has no keyframe")
    gops = set()
    for time in changed:
        position = bisect.bisect_right(keys, time) - 1
        if position < 0:
            raise SpliceError(f"a changed frame at {float(time):.3f} s precedes the chunk")
        gops.add(position)
    segments: list[tuple[Fraction, Fraction | None]] = []
    for position in sorted(gops):
        end = keys[position + 1] if position + 1 < len(keys) else None
        if segments and segments[-1][1] == keys[position]:
            segments[-1] = (segments[-1][0], end)
        else:
            segments.append((keys[position], end))
    return SplicePlan(base, segments)


@dataclass
class SplicingEncoder:
    """Takes the frames of the plan's segments (``rewrites``), encodes each segment on its own
    from a forced keyframe, and :meth:`finish` returns the chunk with those GOPs replaced."""

    settings: EncoderSettings
    plan: SplicePlan
    frames: int = 0
    _open: tuple[int, ChunkEncoder] | None = None
    _done: list[bytes] = field(default_factory=list)

    def encodes(self, pts: int) -> bool:
        """Whether the frame at ``pts`` (source time base) is encoded again, not kept."""
        return self.plan.rewrites(pts * Fraction(self.settings.time_base))

    def write(self, image: NDArray[np.uint8], pts: int, duration: int,
              key: bool = False) -> None:
        time = pts * Fraction(self.settings.time_base)
        segment = self.plan.segment_of(time)
        if segment is None:
            raise SpliceError(f"a frame at {float(time):.3f} s is in no segment to re-encode")
        if self._open is None or self._open[0] != segment:
            if self._open is not None:
                self._done.append(self._open[1].finish())
            self._open = (segment, ChunkEncoder(self.settings))
            key = True  # the segment replaces a GOP that began with an IDR here
        self._open[1].write(image, pts, duration, key)
        self.frames += 1

    def finish(self) -> bytes:
        if self._open is not None:
            self._done.append(self._open[1].finish())
            self._open = None
        if len(self._done) != len(self.plan.segments):
            raise SpliceError(f"{len(self._done)} of {len(self.plan.segments)} segments were "
                              "encoded")
        return splice(self.plan, self._done)

    def abort(self) -> None:
        if self._open is not None:
            self._open[1].abort()


def splice(plan: SplicePlan, segments: list[bytes]) -> bytes:
    """``plan.base`` with the packets of each segment's time range replaced by ``segments``."""
    buffer = io.BytesIO()
    with av.open(io.BytesIO(plan.base), mode="r") as base, \
            av.open(buffer, "w", format=CHUNK_FORMAT, options={"fflags": "+bitexact"}) as out:
        template = base.streams.video[0]
        stream = out.add_stream_from_template(template)
        stream.time_base = template.time_base
        old = list(_packets(base))
        packets = [(time, p) for time, p in old if not plan.rewrites(time)]
        parts = [av.open(io.BytesIO(data), mode="r") for data in segments]
        try:
            for part, (start, _) in zip(parts, plan.segments, strict=True):
                if part.streams.video[0].codec_context.extradata \
                        != template.codec_context.extradata:
                    raise SpliceError("a re-encoded segment has another H.264 parameter set")
                new = list(_packets(part))
                if not new or new[0][0] != start or not new[0][1].is_keyframe:
                    raise SpliceError(f"the segment at {float(start):.3f} s does not begin "
                                      "with a keyframe at its place")
                packets += new
            packets.sort(key=lambda item: item[0])
            if [time for time, _ in packets] != sorted(time for time, _ in old):
                raise SpliceError("the spliced chunk does not hold the frames of the old one")
            for _, packet in packets:
                packet.stream = stream
                out.mux(packet)
        finally:
            for part in parts:
                part.close()
    return buffer.getvalue()


def _packets(container: av.container.InputContainer) -> Iterable[tuple[Fraction, av.Packet]]:
    stream = container.streams.video[0]
    for packet in container.demux(stream):
        if packet.size and packet.pts is not None and packet.time_base is not None:
            yield packet.pts * packet.time_base, packet


def _packet_times(data: bytes) -> list[tuple[Fraction, bool]]:
    """Each frame's time (seconds) and whether it is a keyframe, in decode order."""
    with av.open(io.BytesIO(data), mode="r") as container:
        return [(time, packet.is_keyframe) for time, packet in _packets(container)]
