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

from ntkcheck.instruments.probes import ProbeResult
from ntkcheck.results import io, schema
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
        "## Probes along training",
        md_table(probe_header(), probe_rows(report)),
        *diagnostics_section(report),
        *(["## Figures", "\n".join(f"![{name}](figures/{name}.{report['figure_format']})" for name in FIGURES)]
          if report.get("figure_format") else []),
    ]
    return "\n\n".join(parts) + "\n"


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

def figures(report: dict, metrics: pd.DataFrame, points: dict, curves: dict, folder: Path, fmt: str = "png") -> list[Path]:
    """figures/loss, spectrum, probes, e_eta (seaborn; ``fmt`` png, pdf or svg), from report.json's content, the
    wide metrics of the run, its probes (iteration → :class:`ntkcheck.instruments.probes.ProbeResult`) and the predicted curves.
    Every figure is titled with the run's configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    paths = []
    for name, draw in FIGURES.items():
        fig = draw(plt, sns, report, metrics, points, curves)
        fig.suptitle(configuration_title(report["config"]), fontsize=8, y=1.0, color="dimgray")
        path = Path(folder) / f"{name}.{fmt}"
        io.write_figure(path, fig, fmt, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def configuration_title(cfg: dict) -> str:
    """One line naming the run: sizes, the learner (n, L, e of the MLP; the LSTM's variant and size), η, K, seed."""
    learner = (f"n={cfg['width']}, L={cfg['L']}, T={cfg['T']}, e={fmt(cfg['e'])}" if cfg.get("model", "mlp") == "mlp"
               else f"LSTM-{cfg['lstm_variant']} {cfg['lstm_hidden']}×{cfg['lstm_layers']}, T={cfg['T']}")
    return (f"N={cfg['N']}, {cfg['b']}×{cfg['d']}, {learner}, "
            f"η={fmt(cfg['lr'])}, K={cfg['iters']}, seed {cfg['seed']}" + (", paper draws" if cfg.get("draw") == "paper"
                                                                              else ""))


def _loss(plt, sns, report, metrics, points, curves):
    """Measured F(X_T^k) with the predicted curves, the GD level, the plateau, and the fit's band. Predicted curves
    that coincide (to 0.1 % at every k) are drawn once and named together."""
    from matplotlib.ticker import LogLocator

    names = {"eigen_projection": "eigen-projection of K_0", "lambda_min_rate": "(1 − ηλ_min)^{2k} F_0",
             "theorem_4_3": "Thm 4.3: ρ^k F_0"}
    drawn: list[tuple[str, np.ndarray]] = []
    for key, label in names.items():
        if key not in curves:
            continue
        same = next((i for i, (_, y) in enumerate(drawn) if np.allclose(y, curves[key], rtol=1e-3, atol=0)), None)
        if same is None:
            drawn.append((label, np.asarray(curves[key])))
        else:
            drawn[same] = (f"{drawn[same][0]} = {label} (coincide)", drawn[same][1])
    long = [pd.DataFrame({"k": metrics.index, "F": metrics["F_T"].to_numpy(), "curve": "measured F(X_T^k)"})]
    long += [pd.DataFrame({"k": curves["iteration"], "F": y, "curve": label}) for label, y in drawn]
    data = pd.concat(long, ignore_index=True)
    data = data[np.isfinite(data["F"]) & (data["F"] > 0)]
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    sns.lineplot(data=data, x="k", y="F", hue="curve", style="curve", ax=ax)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.axhline(report["problem"]["F_gd"][-1], color="grey", lw=0.8, ls=":", label="GD, F(X_T)")
    init = report["probe_points"].get("0", {})
    if "linearised" in init and init["linearised"]["plateau"] > 0:
        ax.axhline(init["linearised"]["plateau"], color="black", lw=0.8, ls="--", label="plateau ½‖P_null(K_0) r_0‖²")
    late = next((c["fit"] for c in report["comparisons"] if "late window" in c["what"] and "fit" in c), None)
    if late is not None:
        k = np.arange(late["start"], late["stop"])
        F0 = np.exp(late["intercept"])
        ax.fill_between(k, F0 * late["low"] ** k, F0 * late["high"] ** k, alpha=0.2, color="C3",
                        label=f"fit, late window ({int(100 * late['confidence'])}% band)")
    ax.set_xscale("symlog", linthresh=10)  # the drop happens in the first iterations
    ax.set_xlabel("training iteration k (linear up to 10, then log)")
    ax.set_ylabel("F(X_T)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("loss: measured and predicted")
    return fig


def _spectrum(plt, sns, report, metrics, points, curves):
    """Eigenvalues of K at initialisation and at the last probe, descending, with the rank tolerance."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ks = [k for k in sorted(points) if getattr(getattr(points[k], "K", None), "eigenvalues", None) is not None]
    for k in sorted({ks[0], ks[-1]}) if ks else []:
        K = points[k].K
        lam = np.sort(K.eigenvalues)[::-1]
        line, = ax.plot(np.arange(1, lam.size + 1), np.abs(lam), label=f"|λ_i(K)|, k = {k} (rank {K.rank.rank}/{lam.size})")
        ax.axhline(K.rank.tol, ls=":", lw=0.8, color=line.get_color(), label=f"rank tolerance, k = {k}")
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xlabel("index i (descending)")
    ax.set_ylabel("|λ_i|")
    ax.set_title("NTK spectrum (below the dotted line: zero to working precision)" if ks
                 else "NTK spectrum not measured densely (Lanczos probes)")
    if ks:
        ax.legend(fontsize=8)
    return fig


def _probe_series(points: dict, get) -> pd.DataFrame:
    """(k, value, tolerance) of every probe where ``get(result)`` gives them (None: not measured there)."""
    rows = []
    for k, p in sorted(points.items()):
        found = get(p) if isinstance(p, ProbeResult) else None
        if found is not None:
            rows.append((k, *found))
    return pd.DataFrame(rows, columns=["k", "value", "tol"])


def _against_tolerance(ax, series: pd.DataFrame, label: str) -> None:
    """Values on a log axis; those at or below their tolerance (zero to working precision) as ▽ on the tolerance
    line, which is drawn as the top of a grey band."""
    if series.empty:
        ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", color="gray")
        return
    above = series[series["value"] > series["tol"]]
    below = series[series["value"] <= series["tol"]]
    ax.plot(above["k"], above["value"], "o-", ms=4, label=label)
    ax.fill_between(series["k"], 0, series["tol"], color="0.85", step="mid", label="≤ tolerance: zero to working precision")
    ax.plot(below["k"], below["tol"], "v", color="C3", ms=6, label="value ≤ tolerance")
    ax.set_yscale("log")
    ax.set_ylim(bottom=max(series["tol"].min() / 10, np.finfo(float).tiny))


def _probes(plt, sns, report, metrics, points, curves):
    """α_k with its rank tolerance, |λ_min(K_k)| against the rank tolerance of K_k, λ_max(K_k) (log: it moves by
    decades) and the kernel drift along training."""
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
    dense = lambda p: p.K.rank is not None  # noqa: E731
    _against_tolerance(axes[0], _probe_series(points, lambda p: None if p.alpha is None else
                                              (p.alpha.alpha, p.alpha.rank.tol)), "α_k")
    rank = _probe_series(points, lambda p: None if p.alpha is None else (p.alpha.rank.rank, 0.0))
    axes[0].set_title("α_k = σ_min(G_{L−1,T})" + (f", rank {int(rank['value'].iloc[-1])}/{min(points[rank['k'].iloc[-1]].alpha.shape)}"
                                                  if len(rank) else ""), fontsize=9)
    _against_tolerance(axes[1], _probe_series(points, lambda p: (abs(p.K.lambda_min), p.K.rank.tol) if dense(p) else None),
                       "|λ_min(K_k)|")
    axes[1].set_title("|λ_min(K_k)| against the rank tolerance", fontsize=9)
    lam = _probe_series(points, lambda p: (p.K.lambda_max, 0.0))
    axes[2].plot(lam["k"], lam["value"], "o-", ms=4)
    axes[2].set_yscale("log")
    axes[2].set_title("λ_max(K_k) (log scale)", fontsize=9)
    drift = _probe_series(points, lambda p: (p.drift.rel_change, 0.0) if p.drift is not None else None)
    axes[3].plot(drift["k"], drift["value"], "o-", ms=4)
    axes[3].set_title("‖K_k − K_0‖_F/‖K_0‖_F", fontsize=9)
    for ax in axes:
        ax.set_xlabel("training iteration k")
    if axes[0].get_legend_handles_labels()[0]:  # nothing to label where α is not measured (another learner)
        axes[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def _e_eta(plt, sns, report, metrics, points, curves):
    """The e–η plane: this run, the exact stability line η = 2/λ_max(K_0(e)) (λ_max ∝ e^{2(L−1)} at the
    deterministic initialisation, since the trajectory at W_0 is GD whatever e and G_{L−1} scales as e^{L−1}) with
    the linearised-stable region shaded, and the Lemma 5.1–5.4 thresholds on e with their constant C. The axes span
    the run's e and η by a few decades."""
    cfg = report["config"]
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    if cfg.get("model", "mlp") != "mlp":
        ax.text(0.5, 0.5, f"the e–η plane is the MLP's (e, L): it does not apply to model {cfg['model']}",
                transform=ax.transAxes, ha="center", color="gray")
        ax.set_axis_off()
        return fig
    lemmas = [c for c in report["conditions"] if c["key"].startswith("lemma5") and c["threshold"] is not None]
    shown = [cfg["e"], *(c["threshold"] for c in lemmas if 0 < c["threshold"] < cfg["e"] * 1e4)]
    e = np.logspace(max(np.log10(min(shown)) - 1, -50), min(np.log10(max(shown)) + 1, 50), 200)  # ≤ 100 decades
    init = report["probe_points"].get("0", {})
    lo, hi = min(max(cfg["lr"] / 1e4, 1e-50), 1e45), max(min(cfg["lr"] * 1e4, 1e50), 1e-45)
    if "K" in init and init["K"]["lambda_max"] > 0 and cfg["init"].startswith("deterministic"):
        power = 2 * (cfg["L"] - 1)
        with np.errstate(over="ignore", divide="ignore"):  # far along the line λ_max overflows: η → 0 there
            line = 2 / (init["K"]["lambda_max"] / cfg["e"] ** power * e ** power)
        ax.plot(e, line, color="C0", label=f"η = 2/λ_max(K_0(e)), measured at e = {fmt(cfg['e'])}, ∝ e^-{power}")
        ax.fill_between(e, lo / 10, np.clip(line, lo / 10, hi * 10), color="C0", alpha=0.12,
                        label="η < 2/λ_max: the linearised dynamics are stable")
    for i, c in enumerate(lemmas):
        if e[0] <= c["threshold"] <= e[-1]:
            ax.axvline(c["threshold"], color=f"C{i + 1}", ls="--", lw=0.9,
                       label=f"{c['source']}: e ≥ {fmt(c['threshold'])} (C = {fmt((c.get('constants') or {}).get('C', 1.0))})")
    ax.scatter([cfg["e"]], [cfg["lr"]], color="red", zorder=5, label=f"this run (e = {fmt(cfg['e'])}, η = {fmt(cfg['lr'])})")
    ax.set(xscale="log", yscale="log", xlim=(e[0], e[-1]), ylim=(lo, hi), xlabel="expansion coefficient e",
           ylabel="meta learning rate η", title="e–η plane (Lemma lines off this range are not drawn)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


FIGURES = {"loss": _loss, "spectrum": _spectrum, "probes": _probes, "e_eta": _e_eta}  # name → drawing function


# -- terminal tables of the other commands ------------------------------------------------------------------


def run_table(summary: dict, folder) -> Table:
    """``ntkcheck train``: status, F(X_T) at the start and the end, gain, speed, divergences."""
    table = Table(title=f"run {folder}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("status", summary["status"])
    table.add_row("iterations", str(summary["iterations"]))
    table.add_row("F(X_T) at k=0", f"{summary['F_T_initial']:.6g}")
    table.add_row("F(X_T) at the end", f"{summary['F_T_final']:.6g}")
    table.add_row("gain (F_GD − F)/F_GD", f"{summary['gain_final']:.4f}")
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
