"""The report of ``ntkcheck verify``: the verdict table (terminal and Markdown) and the figures.

A verdict is ``holds`` (the inequality is true on the measured numbers), ``FAILS`` (it is false), or
``undecided`` (a quantity is missing or non-finite, or the statement is a scaling law whose constant is
unknown; its value and threshold are still shown, with the constant), or ``does not apply`` (the condition is about
Math-L2O's MLP and the run's learner is another, e.g. the LSTM; the note says why:
:func:`ntkcheck.theory.not_applicable`).
Quantities of the MLP that another learner does not have (α, δ₃) are shown as ``n/a`` with the reason.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from rich.table import Table

from ntkcheck.results import schema
from ntkcheck.theory import PREDICTION_RTOL

VERDICT = {True: "holds", False: "FAILS", None: "undecided"}
NOT_APPLICABLE = "does not apply"


def fmt(x) -> str:
    """A number for a table: 4 significant digits (``1 − 2.3e-05`` near 1), ``—`` for a missing one."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x != 1 and abs(x - 1) < 1e-3:  # rates near 1: the distance from 1 is the information
        return f"1 {'−' if x < 1 else '+'} {abs(x - 1):.3g}"
    return f"{x:.4g}"


def verdict(holds) -> str:
    return VERDICT[holds]


def row_verdict(row: dict) -> str:
    """A condition row's verdict: :data:`NOT_APPLICABLE` where it does not apply to the learner, else
    :func:`verdict`."""
    return NOT_APPLICABLE if row.get("applies") is False else verdict(row["holds"])


def not_applicable_text(p: dict, name: str = "alpha") -> str:
    """``n/a (reason)`` for a probe quantity that the learner does not have (a probe's ``not_applicable``)."""
    return f"n/a ({p.get('not_applicable', {}).get(name, 'not measured')})"


# -- tables ---------------------------------------------------------------------------------------------------


def condition_rows(report: dict) -> list[list[str]]:
    return [[c["key"], c["source"], c["status"], fmt(c["value"]), c.get("relation", ""), fmt(c["threshold"]),
             row_verdict(c), c.get("note", "")] for c in report["conditions"]]


def comparison_rows(report: dict) -> list[list[str]]:
    return [[c["what"], c["theory"], fmt(c["predicted"]), fmt(c["measured"]), fmt(c["ratio"]),
             c["verdict"]] for c in report["comparisons"]]


CONDITION_HEADER = ["condition", "source", "status", "measured", "", "threshold", "verdict", "gap"]
COMPARISON_HEADER = ["what", "theory", "predicted", "measured", "measured/predicted", "verdict"]


STYLE = {"holds": "green", "FAILS": "red", "undecided": "yellow", "agrees": "green", "differs": "magenta",
         NOT_APPLICABLE: "dim"}


def verdict_table(title: str, rows: list[dict], caption: str | None = None) -> Table:
    """Conditions in the one column order of every table: condition (with its source and status beneath), measured,
    relation and threshold, verdict. Numbers are never wrapped or cut; the text columns fold instead."""
    table = Table(title=title, caption=caption, title_justify="left", show_lines=True)
    table.add_column("condition", overflow="fold", ratio=1)
    table.add_column("measured", justify="right", no_wrap=True)
    table.add_column("threshold", justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    for r in rows:
        v = row_verdict(r)
        constant = f" (C={fmt(r['constants']['C'])})" if r.get("constants") else ""
        about = " · ".join(x for x in (r.get("source"), r.get("status"), r.get("confidence")) if x)
        formula = f"\n[dim]{r['formula']}[/dim]" if r.get("formula") else ""
        table.add_row(f"{r['key']}\n[dim]{about}[/dim]{formula}", fmt(r["value"]), f"{r.get('relation', '')} "
                      f"{fmt(r['threshold'])}{constant}", f"[{STYLE[v]}]{v}[/{STYLE[v]}]")
    return table


def rich_tables(report: dict) -> list[Table]:
    """The verdict table and the comparison table for the terminal (80 columns and up, no number cut)."""
    cond = verdict_table(f"conditions of the proof on run {report['run_id']} ({report['status']}); the gap of each "
                         "is in report.md", report["conditions"], _notes(report))
    comp = Table(title="theory against measurement", title_justify="left", show_lines=True)
    comp.add_column("what (theory)", overflow="fold", ratio=1)
    for name in ("predicted", "measured", "ratio"):
        comp.add_column(name, justify="right", no_wrap=True)
    comp.add_column("verdict", no_wrap=True)
    for c, row in zip(report["comparisons"], comparison_rows(report)):
        v = row[5]
        comp.add_row(f"{c['what']}\n[dim]{c['theory']}[/dim]", row[2], row[3], row[4], f"[{STYLE[v]}]{v}[/{STYLE[v]}]")
    return [cond, comp]


def _notes(report: dict) -> str | None:
    """The report's notes (a divergence, unmeasured probes, a vanished kernel) as a table caption."""
    return "\n".join(f"[yellow]note:[/yellow] {note}" for note in report.get("notes", [])) or None


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table (cells with | or newlines escaped)."""
    clean = lambda s: str(s).replace("\\|", "\\Vert ").replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(clean(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(report: dict) -> str:
    """report.md: configuration, every condition (formula, source, status, value, threshold, verdict, gap),
    the comparisons, the probes along training, and the figures."""
    cfg, s = report["config"], report["summary"]
    mlp = cfg.get("model", "mlp") == "mlp"
    fields = ("N", "d", "b", "width", "L", "T", "e") if mlp else ("N", "d", "b", "model", "lstm_variant", "lstm_hidden",
                                                                  "lstm_layers", "T")
    parts = [
        f"# ntkcheck verify: {report['run_id']}",
        f"Command: `{report['command']}`",
        f"Status **{report['status']}**, {s['iterations']} iterations. F(X_T): {fmt(s['F_T_initial'])} (k = 0"
        + (", = GD under the deterministic init" if mlp else "") + f") → {fmt(s['F_T_final'])} (gain "
        f"{fmt(s['gain_final'])}).",
        "Configuration: " + ", ".join(f"{k}={cfg[k]}" for k in (*fields, "lr", "iters", *(("init",) if mlp else ()),
                                                                 "detach", "step_scale", "seed", "init_seed", "dtype")
                                if cfg.get(k) is not None) + ".",
        f"Probes at k = {', '.join(sorted(report['probe_points'], key=int))} ({report['probe_method']}, float64).",
        f"Training took {fmt(s.get('seconds_training'))} s ({fmt(s.get('seconds_per_iteration'))} s per iteration)"
        + _other_seconds(report.get("seconds") or {}) + "; "
        + ", ".join(f"{k} {v}" for k, v in sorted(report.get("versions", {}).items())) + ".",
        *(["## Notes", "\n".join(f"- {note}" for note in report["notes"])] if report.get("notes") else []),
        "## Conditions",
        "Verdicts: **holds** (true on the measured numbers), **FAILS** (false), **undecided** (a quantity is "
        "missing, or a scaling law whose constant is unknown: value and threshold are shown with the constant)"
        + ("." if mlp else ", **does not apply** (a condition of Math-L2O's MLP: the note says why)."),
        md_table(CONDITION_HEADER, condition_rows(report)),
        "### Formulas and sources",
        md_table(["condition", "title", "formula", "source", "status", "confidence", "needed by the theorem"],
                  [[c["key"], c["title"], f"${c['latex']}$", c["source"], c["status"], c["confidence"],
                    "yes" if c["required"] else "no"] for c in report["conditions"]]),
        "## Theory against measurement",
        "Bounds (the theory's number bounds the measured one from above): **holds** or **FAILS**. Linearised "
        f"predictions: **agrees** (within {PREDICTION_RTOL:.0%} of the prediction, ntkcheck's tolerance) or "
        "**differs**. **undecided**: a number is missing.",
        md_table(COMPARISON_HEADER, comparison_rows(report)),
        *linearised_section(report),
        "## Probes along training",
        md_table(probe_header(), probe_rows(report)),
        *diagnostics_section(report),
        *(["## Figures", "\n".join(f"![{name}](figures/{name}.{report['figure_format']})" for name in FIGURES)]
          if report.get("figure_format") else []),
    ]
    return "\n\n".join(parts) + "\n"


def linearised_section(report: dict) -> list[str]:
    """report.md's lines on linearised training (report.json's ``linearised_training``; none in older reports)."""
    lin = report.get("linearised_training")
    if not lin:
        return []
    if "skipped" in lin:
        return [f"**Linearised training** (the first-order Taylor model X(W_0) + J(W − W_0)) was not run: {lin['skipped']}."]
    if "error" in lin:
        gap = f"no gap: {lin['error']}"
    else:
        gap = (f"the gap |L_k − L^lin_k|/|L_k| is {fmt(lin['final_relative'])} at the end and at most "
               f"{fmt(lin['max_relative'])} (k = {lin['argmax_relative']})")
    diverged = "" if lin.get("diverged_at") is None else f"; the linearised run diverged at k = {lin['diverged_at']}"
    return [(f"**Linearised training** (the first-order Taylor model X(W_0) + J(W − W_0) trained with the run's loss, "
             f"optimiser, η and K; the prediction that applies in every setting): L^lin_K = {fmt(lin['loss_final'])}; "
             f"{gap}{diverged}; it took {fmt(lin['seconds'])} s.")]


def _other_seconds(seconds: dict) -> str:
    """", the diagnostics at W_0 … s, the 6 probes … s (… s each at most)" from report.json's ``seconds``."""
    probes = [v for k, v in seconds.items() if k.startswith("k=")]
    out = f", the diagnostics at W_0 {fmt(seconds['diagnostics'])} s" if "diagnostics" in seconds else ""
    if probes:
        out += f", the {len(probes)} probes {fmt(sum(probes))} s ({fmt(max(probes))} s each at most)"
    return out


def diagnostics_section(report: dict) -> list[str]:
    """report.md's diagnostics at W_0 (docs/diagnostics.md) beside the measured final gain; none away from the
    deterministic initialisation."""
    d = report.get("diagnostics") or {}
    if "error" in d:
        return ["## Diagnostics at the initialisation", f"Not measured: {d['error']}."]
    if not d:
        return []
    f, cone, gain = d["freeze"], d["dead_cone"], report["summary"]["gain_final"]
    rows = [["measured final gain (training)", fmt(gain), ""],
            ["gain where the first SGD step lands", fmt(f["gain_landing"]),
             f"max|φ'| = {fmt(f['phi_max'])} = c·η·e^{{2(L−1)}} with c = {fmt(f['c'])}; saturates P' at "
             f"{fmt(f['saturated'])} of the (t, coordinate) pairs; ‖∇F‖ there / at W_0 = "
             f"{fmt(f['grad_norm_landing'] / f['grad_norm']) if f['grad_norm'] else '—'}"],
            ["dead-cone share along the initial trajectory", fmt(cone["share"]),
             f"first step {fmt(cone['per_step'][0])}, last {fmt(cone['per_step'][-1])}; pairs with P = 1 whatever W_L"]]
    for key, what in (("best_gain_live", "best gain, dead pairs held at P = 1"), ("best_gain_free", "best gain, P free")):
        if key in d:
            b = d[key]
            rows.append([what, fmt(b["gain"]), f"L-BFGS over {b['live']} free step sizes; {b['message']}"
                         + ("" if b["converged"] else " (not converged: a lower bound on the best)")])
    note = [f"Note: {f['note']}."] if f.get("note") else []
    return ["## Diagnostics at the initialisation",
            "The first SGD step from W_L = 0 predicted exactly (the freeze hypothesis: a large η·e^{2(L−1)} saturates "
            "P after one step and the gradient vanishes), and the pairs whose wide-layer features are all zero (the "
            "dead cone). Derivations: docs/diagnostics.md.", md_table(["quantity", "value", "detail"], rows), *note]


def probe_header() -> list[str]:
    """The columns of "Probes along training": k, then the labels of the schema's ``verify`` table."""
    return ["k", *(c.label for c in schema.table("verify"))]


def probe_rows(report: dict) -> list[list[str]]:
    """One row per probe of report.json's ``probe_points``: each column of the schema's ``verify`` table read from
    the probe (:meth:`~ntkcheck.results.schema.Column.read`), as :data:`PROBE_CELLS` writes it where it carries a
    tolerance or a size, else by :func:`fmt`; ``n/a (why)`` where the learner does not have it."""
    columns = schema.table("verify")
    rows = []
    for k, p in sorted(report["probe_points"].items(), key=lambda kp: int(kp[0])):  # JSON sorts keys as text
        if "error" in p:
            rows.append([k, p["error"], *[""] * (len(columns) - 1)])
            continue
        said, row = set(), [k]
        for c in columns:
            v, part = c.read(p), c.key.split("/")[0]
            if v is None and part in p.get("not_applicable", {}):  # the reason once per part, then n/a
                row.append("n/a" if part in said else not_applicable_text(p, part))
                said.add(part)
            else:
                row.append(fmt(v) if v is None or c.key not in PROBE_CELLS else PROBE_CELLS[c.key](p, v))
        rows.append(row)
    return rows


def _lambda_min_cell(p: dict, v: float) -> str:
    """λ_min(K) with the rank tolerance where it is within it (zero to working precision)."""
    tol = p["K"].get("rank_tol")
    return fmt(v) + (f" (≤ tol {fmt(tol)})" if tol is not None and abs(v) <= tol else "")


def _rank_K_cell(p: dict, v: int) -> str:
    return f"{v}/{p['n_outputs']} (tol {fmt(p['K']['rank_tol'])})"


def _alpha_cell(p: dict, v: float) -> str:
    """α, "exactly" zero where the activation patterns bound the rank, else with its tolerance where within it."""
    a = p["alpha"]
    exact = a.get("rank_bound") is not None  # the pattern bound makes the trailing singular values exact zeros
    return fmt(v) + (" (exactly)" if exact and v == 0 else f" (≤ tol {fmt(a['tol'])})" if v <= a["tol"] else "")


def _rank_G_cell(p: dict, v: int) -> str:
    a = p["alpha"]
    bound = f"; ≤ {a['rank_bound']} from {a['patterns']} patterns" if a.get("rank_bound") is not None else ""
    return f"{v}/{min(a['n_rows'], a['n_cols'])} (tol {fmt(a['tol'])}{bound})"


PROBE_CELLS = {"ntk/K/lambda_min": _lambda_min_cell, "ntk/K/rank": _rank_K_cell, "alpha/alpha": _alpha_cell,
               "alpha/rank": _rank_G_cell}  # schema key → its cell in "Probes along training" (others: fmt)


# -- figures --------------------------------------------------------------------------------------------------

FIGURES = ("loss", "spectrum", "probes", "e_eta")  # a run's figures, in report.md's order (report.run_figures)


def figures(report: dict, metrics: pd.DataFrame, points: dict, curves: dict, folder: Path,
            fmt: str = "png") -> list[Path]:
    """figures/loss, spectrum, probes, e_eta of a run: :func:`ntkcheck.report.run_figures.write`."""
    from ntkcheck.report import run_figures  # matplotlib only where figures are drawn

    return run_figures.write(report, metrics, points, curves, folder, fmt)




# -- terminal tables of the other commands ------------------------------------------------------------------


CLASSICAL_NAMES = {"gd": "GD", "nag": "NAG", "prox": "proximal gradient", "fista": "FISTA"}  # by update rule


def run_table(summary: dict, folder) -> Table:
    """``ntkcheck train``: status, F(X_T) at the start and the end, the gain over the backbone's classical method, the
    gap to the optimum F*, speed, divergences."""
    table = Table(title=f"run {folder}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("status", summary["status"])
    table.add_row("iterations", str(summary["iterations"]))
    table.add_row("F(X_T) at k=0", f"{summary['F_T_initial']:.6g}")
    table.add_row("F(X_T) at the end", f"{summary['F_T_final']:.6g}")
    reference = CLASSICAL_NAMES[summary.get("reference", "gd")]
    table.add_row(f"gain over {reference} (F_ref − F)/F_ref", f"{summary['gain_final']:.4f}")
    if "F_star" in summary:
        table.add_row("F* (optimum)", f"{summary['F_star']:.6g}")
        table.add_row("gap F(X_T) − F*", f"{summary['gap_final']:.3g}")
    table.add_row("seconds per iteration", f"{summary['seconds_per_iteration']:.3g}")
    if summary["diverged_iterations"]:
        table.add_row("diverged at", ", ".join(map(str, summary["diverged_iterations"][:10])))
    return table


def ntk_table(report: dict, folder) -> Table:
    """``ntkcheck ntk``: every probe quantity (ntk.json's content) at each measured point."""
    points = report["points"]
    table = Table(title=f"NTK of Math-L2O (float64, {report['method']}) → {folder}", caption=_notes(report))
    table.add_column("quantity")
    for name, p in points.items():
        table.add_column(f"{name} (k={p['iteration']})", justify="right")

    def row(label, get):
        table.add_row(label, *(get(p) for p in points.values()))

    g = lambda x: f"{x:.6g}"  # noqa: E731
    row("loss ½‖r‖² = F(X_T)", lambda p: g(p["loss"]))
    for key, sym in (("K", "K = J Jᵀ"), ("K_training", "½(K̃ + K̃ᵀ), K̃ = J J̃ᵀ")):
        row(f"λ_max {sym}", lambda p: g(p[key]["lambda_max"]))
        row(f"λ_min {sym}", lambda p: g(p[key]["lambda_min"]))
        row(f"rank {sym} (tol)", lambda p: f"{p[key]['rank']}/{p['n_outputs']} ({p[key]['rank_tol']:.2g})")
        for layer in next(iter(points.values()))[key]["layer_traces"]:
            row(f"trace {sym}, {layer}", lambda p: g(p[key]["layer_traces"][layer]))
    row("‖K̃ − K̃ᵀ‖_F/‖K̃‖_F", lambda p: g(p["K_training"]["asymmetry"]))
    a = next(iter(points.values()))["alpha"]
    if a is None:  # a learner without the MLP's wide layer
        row("α = σ_min(G_{L−1,t})", not_applicable_text)
    else:
        row(f"α = σ_min(G_{{L−1,{a['t']}}}) ({a['n_rows']}×{a['n_cols']})", lambda p: g(p["alpha"]["alpha"]))
        row("σ_max(G_{L−1,t})", lambda p: g(p["alpha"]["sigma_max"]))
        row("rank G_{L−1,t} (tol)", lambda p: f"{p['alpha']['rank']} ({p['alpha']['tol']:.2g})")
        row("rank G_{L−1,t} ≤ (activation patterns)", lambda p: "—" if p["alpha"].get("rank_bound") is None
            else f"{p['alpha']['rank_bound']} ({p['alpha']['patterns']})")
    row(f"η = {report['lr']:.3g} < 2/λ_max(K)", lambda p: f"{g(p['linearised']['threshold'])} "
        f"({'stable' if p['linearised']['stable'] else 'UNSTABLE'})")
    row("2/λ_max(½(K̃ + K̃ᵀ))", lambda p: g(p["threshold_training"]))
    row("1 − ηλ_min(K)", lambda p: f"{p['linearised']['rate']:.17g}")
    row("plateau ½‖P_null r‖² (null dim)", lambda p: f"{g(p['linearised']['plateau'])} ({p['linearised']['null_dim']})")
    if "drift" in report:
        table.add_row("‖K_end − K_0‖_F/‖K_0‖_F", "", g(report["drift"]["rel_change"]))
        table.add_row("1 − ⟨K_0,K_end⟩/(‖K_0‖‖K_end‖)", "", g(report["drift"]["distance"]))
    return table


def ntk_frame(report: dict) -> pd.DataFrame:
    """``ntkcheck ntk --csv``: one row per measured point, its numbers flattened (``K/lambda_max``, ``alpha/alpha``)."""
    return pd.json_normalize([{"point": name, **{k: v for k, v in p.items() if k != "weights"}}
                              for name, p in report["points"].items()], sep="/")


def bounds_table(rows: list[dict], cfg, data: bool) -> Table:
    """``ntkcheck bounds``: each condition (source, status, confidence beneath) with the configuration's value, the
    relation and threshold, and the verdict: the column order of every verdict table."""
    title = (f"Theory of Math-L2O for T={cfg.T}, L={cfg.L}, e={cfg.e:g}, η={cfg.lr:g}, n={cfg.width}, "
             f"N={cfg.N}, d={cfg.d}, b={cfg.b}, s={cfg.step_scale:g}" + (f", data seed {cfg.seed}" if data else ""))
    return verdict_table(title, rows)


def plain(x):
    """A JSON-safe value: NaN and ±∞ as None (JSON has neither), numpy scalars as Python numbers."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


VERDICT_FIELDS = ("key", "source", "status", "confidence", "formula", "value", "relation", "threshold", "holds", "note")


def verdict_frame(rows: list[dict]) -> pd.DataFrame:
    """Conditions as a table for --csv: one row each, the fields of :data:`VERDICT_FIELDS` and the constant C."""
    return pd.DataFrame([{**{k: r.get(k) for k in VERDICT_FIELDS},
                          "C": (r.get("constants") or {}).get("C")} for r in rows])
