"""The HTML of `veil report`: plots (matplotlib, Agg backend, embedded as base64 PNG so the page
is one self-contained file that opens offline) and the jinja2 template shipped with the package
(``producer/templates/report.html.j2``, read through importlib.resources)."""

from __future__ import annotations

import base64
import io
from collections import defaultdict
from importlib import resources
from typing import Any

import jinja2
import matplotlib

matplotlib.use("Agg")  # no display on servers; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def render_html(data: dict[str, Any]) -> str:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_template), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["span"] = span
    return env.get_template("report.html.j2").render(data=data, plots=_plots(data))


def _template(name: str) -> str:
    return resources.files("producer").joinpath("templates", name).read_text()


def span(seconds: float | int | None) -> str:
    """86400 -> 1d, 5400 -> 1h 30m, None -> kept until erased."""
    if seconds is None:
        return "kept until erased"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    parts, rest = [], seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return " ".join(parts[:2])


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(data: dict[str, Any]) -> dict[str, str]:
    """Where a person would rather look than read: recordings per camera and policy, deletion
    outcomes and delays, raw access by actor. An empty series gets no plot."""
    plots: dict[str, str] = {}
    if data["recordings"]:
        plots["recordings"] = _recordings_plot(data["recordings"])
    deletions = data["deletions"]
    if deletions["due"]:
        plots["deletions"] = _deletions_plot(deletions)
    if data["raw_access"]:
        plots["raw_access"] = _raw_access_plot(data["raw_access"])
    return plots


def _recordings_plot(rows: list[dict[str, Any]]) -> str:
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        counts[r["policy_name"]][r["camera"]] += r["sources"]
    cameras = sorted({r["camera"] for r in rows})
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(cameras)))
    left = [0] * len(cameras)
    for policy, per_camera in sorted(counts.items()):
        values = [per_camera.get(c, 0) for c in cameras]
        ax.barh(cameras, values, left=left, label=policy)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_xlabel("recordings ingested")
    ax.legend(title="policy", fontsize=8)
    ax.invert_yaxis()
    return _png(fig)


def _deletions_plot(deletions: dict[str, Any]) -> str:
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3))
    kinds = ["on_time", "late", "overdue", "deferred"]
    colours = ["#2a9d8f", "#e9c46a", "#e76f51", "#8d99ae"]
    left.bar([k.replace("_", " ") for k in kinds], [deletions[k] for k in kinds], color=colours)
    left.set_title("deletions due in the period")
    delays = deletions["delays_min"]
    right.hist(delays or [0], bins=20, color="#264653")
    right.set_title("delay after due time (done)")
    right.set_xlabel("minutes")
    return _png(fig)


def _raw_access_plot(rows: list[dict[str, Any]]) -> str:
    labels = [f"{r['actor']} ({r['action']})" for r in rows]
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(rows)))
    ax.barh(labels, [r["events"] for r in rows], color="#6d597a")
    ax.set_xlabel("raw-access events")
    ax.invert_yaxis()
    return _png(fig)
