"""`veil review`: sources with uncertain detections, for human oversight (GDPR Art. 22).

A detection whose score lies in the policy's review band was redacted all the same; it is
flagged so that a person can look at the output (and the surroundings a detector may have
missed) instead of trusting the machine alone. ``veil review`` lists the sources that have such
detections and no review yet; ``veil review --done ID`` records that a person looked.
"""

from __future__ import annotations

import getpass
import uuid
from typing import Any

import click

from infra import db, ledger_review
from infra.settings import Settings
from producer.cli_common import emit, load_settings, parse_source_ids, service_errors


def pending_reviews(settings: Settings, include_reviewed: bool = False,
                    limit: int = 100) -> list[dict[str, Any]]:
    """Sources with uncertain detections (not yet reviewed, unless ``include_reviewed``)."""
    with db.connect(settings) as conn:
        rows = ledger_review.sources_awaiting_review(conn, include_reviewed, limit)
    return [{**row, "source_id": str(row["source_id"]),
             "min_score": round(float(row["min_score"]), 3),
             "max_score": round(float(row["max_score"]), 3)} for row in rows]


def record_review(settings: Settings, source_id: uuid.UUID, reviewer: str, note: str) -> None:
    """Record that ``reviewer`` looked at ``source_id``; the source must exist."""
    with db.transaction(settings) as conn:
        if not ledger_review.record_review(conn, source_id, reviewer, note):
            raise click.ClickException(f"no source {source_id}")


@click.command()
@click.option("--done", "done", metavar="SOURCE_ID", multiple=True,
              help="Record that you reviewed this source (repeatable); it leaves the list.")
@click.option("--note", default="", help="A note stored with --done.")
@click.option("--by", "reviewer", default=None, help="Reviewer name for --done (default: "
              "your login name).")
@click.option("--all", "include_reviewed", is_flag=True, help="Also list reviewed sources.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def review(done: tuple[str, ...], note: str, reviewer: str | None, include_reviewed: bool,
           limit: int, as_json: bool) -> None:
    """List sources whose detections were uncertain, so a person can look at them.

    \b
    Uncertain means a score inside the policy's review band (policy key `review`, per class:
    low <= score < high). Those regions were redacted anyway; the review is a person checking
    the output (`veil export SOURCE_ID`) for anything the detector got wrong.
      veil review                       what is waiting
      veil review --done ID --note ok   mark it reviewed
    """
    settings = load_settings()
    if done:
        ids = parse_source_ids(done, param_hint="--done")
        with service_errors():
            for source_id in ids:
                record_review(settings, source_id, reviewer or getpass.getuser(), note)
        emit(as_json, {"reviewed": [str(i) for i in ids]},
             lambda: [f"reviewed {i}" for i in ids])
        return
    with service_errors():
        rows = pending_reviews(settings, include_reviewed, limit)
    emit(as_json, rows, lambda: _lines(rows))


def _lines(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["nothing to review"]
    lines = [f"{'source':<36}  {'uncertain':>9}  {'classes':<12} {'scores':<11}  name"]
    for row in rows:
        mark = "  (reviewed)" if row["reviewed_at"] else ""
        lines.append(f"{row['source_id']:<36}  {row['uncertain']:>9}  "
                     f"{','.join(row['classes']):<12} {row['min_score']:.2f}-{row['max_score']:.2f}"
                     f"  {row['original_name']}{mark}")
    return lines
