"""`veil report`: the record of processing (Art. 30) and DPIA annex (Art. 35) as one HTML page."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import click

from producer.cli_common import load_settings, service_errors, time_option


@click.command()
@click.option("--from", "start", required=True, callback=time_option,
              help="ISO 8601; naive is UTC.")
@click.option("--to", "end", required=True, callback=time_option, help="ISO 8601; naive is UTC.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The HTML file to write (self-contained: plots are embedded).")
@click.option("--json", "as_json", is_flag=True, help="Also print the report's data as JSON.")
def report(start: datetime, end: datetime, output: Path, as_json: bool) -> None:
    """Write the record of processing and the DPIA technical annex for a period.

    From the policies file (purpose, legal basis, classes, method, retention and why), the
    latest quality figures of bench/, and the ledger: recordings per camera and policy, guard
    outcomes, deletions on time and overdue, erasures, consent withdrawals and access requests
    with response times, legal holds, raw-access events by actor.
    """
    from producer.report import build_report
    from producer.report_render import render_html
    if end <= start:
        raise click.BadParameter(f"--to ({end.isoformat()}) is not after --from", param_hint="--to")
    with service_errors():
        data = build_report(load_settings(), start, end)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    partial.write_text(render_html(data), encoding="utf-8")
    partial.replace(output)
    if as_json:
        click.echo(json.dumps({"path": str(output), **data}, indent=2, default=str))
        return
    d = data["deletions"]
    click.echo(f"{output}: {len(data['policies'])} policies, "
               f"{sum(r['sources'] for r in data['recordings'])} recordings, "
               f"{d['due']} deletions due ({d['overdue']} overdue, {d['late']} late), "
               f"{data['erasures']['count']} erasures, {data['withdrawals']['count']} consent "
               f"withdrawals, {data['access_requests']['count']} access requests")
