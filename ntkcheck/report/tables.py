"""Command-line output beyond the tables of :mod:`.run`: the sweep's gain table and status line, the bounds notes,
verify's JSON, and the JSON or CSV text of ``--json``/``--csv``."""

from __future__ import annotations

import json

from rich import box
from rich.table import Table

from ntkcheck.report.run import plain
from ntkcheck.report.sweep import gain_rows, heading, summary_table


def sweep_gain_table(result) -> Table:
    """The final gain per grid cell over its seeds (:func:`ntkcheck.report.sweep.summary_table`): median [IQR],
    min, the seeds worse than GD, diverged and failed."""
    axes = list(result.spec.axes)
    table = Table(title="final gain over GD, per grid cell over its seeds", title_justify="left", box=box.SIMPLE_HEAD)
    for head in map(heading, axes):
        table.add_column(head, no_wrap=True)
    table.add_column("n")
    for head in ("median [IQR]", "min", "worse than GD", "div.", "failed"):
        table.add_column(head, min_width=12 if head == "median [IQR]" else 10 if head == "min" else None)
    for row in gain_rows(summary_table(result.cells, axes), axes):
        table.add_row(*row)
    return table


def sweep_status_line(cells) -> str:
    """How many cells ended in each status, most first: ``"3 completed, 1 diverged"``."""
    return ", ".join(f"{n} {status}" for status, n in cells.status.value_counts().items())


def bounds_notes(rows: list[dict], C: float | None) -> list[str]:
    """The lines under the bounds table: the constant C when unset, then each condition's note (rich markup)."""
    unset = [] if C is not None else ["scaling laws: the constant C of Ω(·) is unknown; thresholds at C = 1 (set --C)"]
    return unset + [f"[dim]{r['key']}[/dim] {r['note']}" for r in rows]


def verify_json(result) -> dict:
    """``ntkcheck verify --json``: the report's verdicts and summary, and the run folder."""
    keys = ("status", "run_id", "command", "summary", "conditions", "comparisons", "notes", "diagnostics")
    return {k: result.report[k] for k in keys} | {"folder": str(result.folder)}


def machine_readable(kind: str, as_json, as_frame) -> str:
    """``kind`` json: ``as_json()`` as indented JSON (NaN and ∞ as null, :func:`ntkcheck.report.run.plain`), with a
    newline; csv: ``as_frame()`` as CSV."""
    if kind == "json":
        return json.dumps(plain(as_json()), indent=2, default=str) + "\n"
    return as_frame().to_csv(index=False)
