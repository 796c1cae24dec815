"""Every terminal table fits 80 columns without cutting a number; --json and --csv give the same numbers."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from rich.cells import cell_len
from rich.console import Console

from ntkcheck import preset
from ntkcheck.cli import main
from ntkcheck.report.run import bounds_table, fmt, ntk_table, rich_tables, run_table
from ntkcheck.theory import thresholds

ROOT = Path(__file__).resolve().parents[1]
SIZES = ["--N", "3", "--d", "6", "--b", "4", "--width", "8", "--T", "3"]


def rendered(*tables, width: int = 80) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(*tables)
    return console.export_text()


def assert_fits_and_keeps(text: str, numbers: list[str]) -> None:
    assert "…" not in text, "a cell was cut"
    assert max(cell_len(line) for line in text.splitlines()) <= 80  # terminal cells (λ̲ is one cell, two code points)
    lines = text.splitlines()
    for number in numbers:
        assert any(number in line for line in lines), f"{number!r} is not whole on any line"


def test_the_verify_tables_fit_80_columns_with_every_number_whole():
    report = json.loads((ROOT / "results" / "verify-small" / "report.json").read_text())
    text = rendered(*rich_tables(report))
    numbers = [fmt(c["value"]) for c in report["conditions"]] + [fmt(c["threshold"]) for c in report["conditions"]]
    numbers += [fmt(c[k]) for c in report["comparisons"] for k in ("predicted", "measured", "ratio")]
    assert_fits_and_keeps(text, numbers)
    header = next(line for line in text.splitlines() if "measured" in line and "threshold" in line)
    assert header.index("measured") < header.index("threshold") < header.index("verdict")


def test_the_bounds_table_fits_80_columns_in_the_same_column_order():
    cfg = preset("small")
    rows = thresholds(cfg, data=True)
    text = rendered(bounds_table(rows, cfg, True))
    assert_fits_and_keeps(text, [fmt(r["value"]) for r in rows] + [fmt(r["threshold"]) for r in rows])
    header = next(line for line in text.splitlines() if "measured" in line)
    assert header.index("measured") < header.index("threshold") < header.index("verdict")


def test_the_ntk_and_run_tables_fit_80_columns(tmp_path, capsys):
    assert main(["ntk", *SIZES, "--out", str(tmp_path / "k"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    numbers = [fmt(p["K"]["lambda_max"]) for p in report["points"].values()]
    assert_fits_and_keeps(rendered(ntk_table(report, tmp_path / "k")), numbers)
    summary = {"status": "completed", "iterations": 5000, "F_T_initial": 3.430362924714593, "F_T_final": 1.3390411,
               "gain_final": 0.6096, "seconds_per_iteration": 0.0281, "diverged_iterations": []}
    assert_fits_and_keeps(rendered(run_table(summary, tmp_path / "a-long-folder-name-for-the-run")),
                          ["3.43036", "1.33904", "0.6096"])


def test_bounds_json_and_csv_carry_every_condition(capsys):
    assert main(["bounds", *SIZES, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and {"key", "value", "relation", "threshold", "holds", "source", "formula"} <= set(rows[0])
    assert main(["bounds", *SIZES, "--csv"]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(frame["key"]) == [r["key"] for r in rows]
    finite = [(a, b) for a, b in zip(frame["value"], (r["value"] for r in rows)) if b is not None]
    assert all(a == pytest.approx(b, rel=1e-15) for a, b in finite)


def test_ntk_and_verify_json_schemas(tmp_path, capsys):
    assert main(["ntk", *SIZES, "--out", str(tmp_path / "k"), "--json"]) == 0
    ntk = json.loads(capsys.readouterr().out)
    assert {"points", "config", "method", "folder"} <= set(ntk)
    assert {"K", "alpha", "loss"} <= set(next(iter(ntk["points"].values())))
    assert main(["verify", *SIZES, "--iters", "2", "--ntk-every", "1", "--no-figures", "--out", str(tmp_path / "v"),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"status", "command", "summary", "conditions", "comparisons", "notes", "diagnostics", "folder"} <= set(out)
    assert all(c["verdict"] in ("holds", "FAILS", "agrees", "differs", "undecided") for c in out["comparisons"])
    assert {"key", "value", "relation", "threshold", "holds"} <= set(out["conditions"][0])
    assert main(["verify", *SIZES, "--iters", "2", "--no-figures", "--out", str(tmp_path / "w"), "--csv"]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(frame["key"]) == [c["key"] for c in out["conditions"]]


def test_json_and_csv_together_are_refused(capsys):
    assert main(["bounds", *SIZES, "--json", "--csv"]) == 2
    assert "--json" in capsys.readouterr().err
