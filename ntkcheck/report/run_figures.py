"""The figures of a run (``ntkcheck verify``) in the one style of :mod:`ntkcheck.report.plots`, drawn from report.json's
content, the run's wide metrics, its probes and the predicted curves: they compute nothing new.

    loss       F(X_T^k) measured against the linearised predictions, GD, the plateau, the fitted rate; divergences
    spectrum   the eigenvalues of K at the first and the last probe, with the rank tolerance
    probes     α_k, |λ_min(K_k)| against their tolerances, λ_max(K_k) and the kernel drift along training
    e_eta      the e–η plane: this run against the lines of :mod:`ntkcheck.report.e_eta`
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator

from bounds.local import lambda_max_of_e
from ntkcheck.report import e_eta, plots
from ntkcheck.report.plots import tick

G_WIDE = "G_(L−1,T)"  # the wide layer's features, in a figure's text


def write(report: dict, metrics: pd.DataFrame, points: dict, curves: dict, folder: Path,
          fmt: str = "png") -> list[Path]:
    """``folder/<name>.<fmt>`` for each figure of :data:`FIGURES` (``fmt`` png, pdf or svg), from report.json's
    content, the wide metrics of the run, its probes (iteration → :class:`ntkcheck.instruments.probes.ProbeResult`, or a
    failure) and the predicted curves; each written atomically (:func:`ntkcheck.report.plots.save`)."""
    plots.check_format(fmt)
    return [plots.save(figure(name, report, metrics, points, curves), Path(folder) / f"{name}.{fmt}", fmt)
            for name in FIGURES]


@plots.styled
def figure(name: str, report: dict, metrics: pd.DataFrame, points: dict, curves: dict) -> Figure:
    """The figure ``name`` of :data:`FIGURES`, its configuration beneath its title."""
    fig = FIGURES[name](report, metrics, points, curves)
    fig.suptitle(configuration_title(report["config"]), fontsize=8, color="dimgray")
    return fig


def configuration_title(cfg: dict) -> str:
    """One line naming the run: sizes, the learner (n, L, e of the MLP; the LSTM's variant and size), η, K, seed."""
    learner = (f"n={cfg['width']}, L={cfg['L']}, T={cfg['T']}, e={tick(cfg['e'])}" if cfg.get("model", "mlp") == "mlp"
               else f"LSTM-{cfg['lstm_variant']} {cfg['lstm_hidden']}×{cfg['lstm_layers']}, T={cfg['T']}")
    draws = ", paper draws" if cfg.get("draw") == "paper" else ""
    return (f"N={cfg['N']}, {cfg['b']}×{cfg['d']}, {learner}, η={tick(cfg['lr'])}, K={cfg['iters']}, "
            f"seed {cfg['seed']}{draws}")


def _loss(report, metrics, points, curves) -> Figure:
    """Measured F(X_T^k) with the predicted curves, the GD level, the plateau, the fit's band, and the iterations where
    training diverged. Predicted curves that coincide (to 0.1 % at every k) are drawn once and named together."""
    names = {"eigen_projection": "eigen-projection of K_0", "lambda_min_rate": "(1 − ηλ_min)^(2k)·F_0",
             "theorem_4_3": "Thm 4.3: ρ^k·F_0"}
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
    fig = plots.figure(7.5, 4.4)
    ax = fig.subplots()
    sns.lineplot(data=data, x="k", y="F", hue="curve", style="curve", ax=ax)
    plots.log_axes(ax, y=True)
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
    diverged = metrics.index[metrics["diverged"] > 0] if "diverged" in metrics else []
    if len(diverged):
        ax.scatter(diverged, np.full(len(diverged), 0.03), transform=ax.get_xaxis_transform(), marker="x", s=30,
                   color=e_eta.POINT_COLOR, zorder=5, label=f"diverged: non-finite loss ({len(diverged)} iterations)")
    ax.set_xscale("symlog", linthresh=10)  # the drop happens in the first iterations
    plots.plain_ticks(ax.xaxis)
    ax.set_xlabel("training iteration k (linear up to 10, then log)")
    ax.set_ylabel("F(X_T)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("loss F(X_T^k) along training: measured, and predicted by the linearised theory")
    return fig


def _spectrum(report, metrics, points, curves) -> Figure:
    """Eigenvalues of K at initialisation and at the last probe, descending, with the rank tolerance."""
    fig = plots.figure(7, 4.2)
    ax = fig.subplots()
    ks = [k for k in sorted(points) if getattr(getattr(points[k], "K", None), "eigenvalues", None) is not None]
    for k in sorted({ks[0], ks[-1]}) if ks else []:
        K = points[k].K
        lam = np.sort(K.eigenvalues)[::-1]
        line, = ax.plot(np.arange(1, lam.size + 1), np.abs(lam),
                        label=f"|λ_i(K)|, k = {k} (rank {K.rank.rank}/{lam.size})")
        ax.axhline(K.rank.tol, ls=":", lw=0.8, color=line.get_color(), label=f"rank tolerance, k = {k}")
    plots.log_axes(ax, x=True, y=True)
    ax.set_xlabel("index i (descending)")
    ax.set_ylabel("|λ_i|")
    ax.set_title("eigenvalues |λ_i| of the NTK K = J Jᵀ at the first and last probe (below the dotted line: zero to "
                 "working precision)" if ks else "NTK spectrum not measured densely (Lanczos probes)", fontsize=9)
    if ks:
        ax.legend(fontsize=8)
    return fig


def _probe_series(points: dict, get) -> pd.DataFrame:
    """(k, value, tolerance) of every measured probe where ``get(result)`` gives them (None: not measured there); a
    probe that failed (it has no kernel ``K``) has none."""
    rows = []
    for k, p in sorted(points.items()):
        found = get(p) if hasattr(p, "K") else None
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
    if len(above):  # a legend entry only for what is drawn
        ax.plot(above["k"], above["value"], "o-", ms=4, label=label)
    ax.fill_between(series["k"], 0, series["tol"], color="0.85", step="mid",
                    label="≤ tolerance: zero to working precision")
    if len(below):
        ax.plot(below["k"], below["tol"], "v", color="C3", ms=6, label="value ≤ tolerance, drawn on it")
    plots.log_axes(ax, y=True)
    ax.set_ylim(bottom=max(series["tol"].min() / 10, np.finfo(float).tiny))


def _probes(report, metrics, points, curves) -> Figure:
    """α_k with its rank tolerance, |λ_min(K_k)| against the rank tolerance of K_k, λ_max(K_k) (log: it moves by
    decades) and the kernel drift along training."""
    fig = plots.figure(14, 3.6)
    axes = fig.subplots(1, 4)
    dense = lambda p: p.K.rank is not None  # noqa: E731
    _against_tolerance(axes[0], _probe_series(points, lambda p: None if p.alpha is None else
                                              (p.alpha.alpha, p.alpha.rank.tol)), "α_k")
    rank = _probe_series(points, lambda p: None if p.alpha is None else (p.alpha.rank.rank, 0.0))
    axes[0].set_title(f"α_k = σ_min({G_WIDE})" + (f", rank {int(rank['value'].iloc[-1])}/"
                                                  f"{min(points[rank['k'].iloc[-1]].alpha.shape)}"
                                                  if len(rank) else ""), fontsize=9)
    _against_tolerance(axes[1], _probe_series(points, lambda p: (abs(p.K.lambda_min), p.K.rank.tol)
                                              if dense(p) else None), "|λ_min(K_k)|")
    axes[1].set_title("|λ_min(K_k)| against the rank tolerance", fontsize=9)
    lam = _probe_series(points, lambda p: (p.K.lambda_max, 0.0))
    axes[2].plot(lam["k"], lam["value"], "o-", ms=4)
    plots.log_axes(axes[2], y=True)
    axes[2].set_title("λ_max(K_k) (log scale)", fontsize=9)
    drift = _probe_series(points, lambda p: (p.drift.rel_change, 0.0) if p.drift is not None else None)
    axes[3].plot(drift["k"], drift["value"], "o-", ms=4)
    axes[3].set_title("kernel drift ‖K_k − K_0‖_F / ‖K_0‖_F", fontsize=9)
    for ax in axes:
        ax.set_xlabel("training iteration k")
    if axes[0].get_legend_handles_labels()[0]:  # nothing to label where α is not measured (another learner)
        axes[0].legend(fontsize=7, loc="lower left")
    return fig


def _e_eta(report, metrics, points, curves) -> Figure:
    """The e–η plane of this run, with the lines of :mod:`ntkcheck.report.e_eta` as functions of e through the
    numbers measured and evaluated at the run's e: at the deterministic initialisation λ_max(K_0(e)) =
    (e/e_run)^{2(L−1)} λ_max(K_0(e_run)) exactly (:func:`bounds.local.lambda_max_of_e`: the trajectory at W_0 is GD
    whatever e, and G_{L−1} scales as e^{L−1}), which gives the stability line 2/λ_max(K_0(e)) (the linearised-stable
    region below it shaded) and Eq. 14's 1/λ_max(K_0(e)); Λ̄₀²(e) ∝ e^{2(L−1)} by its formula gives Eq. 14 a priori;
    Cor. C.1's largest e at the run's η; the Lemma 5.1–5.4 thresholds on e with their constant C. The axes span the
    run's e and η by a few decades."""
    cfg = report["config"]
    fig = plots.figure(7.5, 4.4)
    ax = fig.subplots()
    if cfg.get("model", "mlp") != "mlp":
        ax.text(0.5, 0.5, f"the e–η plane is the MLP's (e, L): it does not apply to model {cfg['model']}",
                transform=ax.transAxes, ha="center", color="gray")
        ax.set_axis_off()
        return fig
    conditions = {c["key"]: c for c in report["conditions"]}
    lemmas = [c for key, c in conditions.items() if key.startswith("lemma5")]
    shown = [cfg["e"], *(c["threshold"] for c in lemmas if c["threshold"] is not None
                         and 0 < c["threshold"] < cfg["e"] * 1e4)]
    e = np.logspace(max(np.log10(min(shown)) - 1, -50), min(np.log10(max(shown)) + 1, 50), 200)  # ≤ 100 decades
    lo, hi = min(max(cfg["lr"] / 1e4, 1e-50), 1e45), max(min(cfg["lr"] * 1e4, 1e50), 1e-45)
    _e_eta_lines(ax, cfg, conditions, report["probe_points"].get("0", {}), e, (lo, hi))
    e_eta.lemma_lines(ax, [(c["source"], c["threshold"], (c.get("constants") or {}).get("C", 1.0), c["note"])
                           for c in lemmas], e[0], e[-1])
    ax.scatter([cfg["e"]], [cfg["lr"]], color=e_eta.POINT_COLOR, zorder=5,
               label=f"this run (e = {tick(cfg['e'])}, η = {tick(cfg['lr'])}): {report['status']}")
    plots.log_axes(ax, x=True, y=True)
    ax.set(xlim=(e[0], e[-1]), ylim=(lo, hi), xlabel="expansion coefficient e", ylabel="meta learning rate η")
    ax.set_title("the e–η plane: this run against 2/λ_max(K_0(e)) and the theory's bounds", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def _e_eta_lines(ax, cfg: dict, conditions: dict, init: dict, e: np.ndarray, eta_range: tuple) -> None:
    """The η lines through the run's numbers (:func:`_e_eta`), and Cor. C.1's point, where they were measured."""
    L, scale = cfg["L"], e / cfg["e"]
    deterministic = cfg["init"].startswith("deterministic")
    if "K" in init and init["K"]["lambda_max"] > 0 and deterministic:
        lam = lambda_max_of_e(init["K"]["lambda_max"], scale, L)  # λ_max(K_0(e)) = (e/e_run)^{2(L−1)}·λ_max(e_run)
        with np.errstate(divide="ignore"):  # far along the line λ_max overflows: η → 0 there
            stable, eq14 = 2 / lam, 1 / lam
        e_eta.eta_line(ax, "stable", e, stable, note=f" at e = {tick(cfg['e'])}, ∝ e^−{2 * (L - 1)}")
        ax.fill_between(e, eta_range[0] / 10, np.clip(stable, eta_range[0] / 10, eta_range[1] * 10), color="0.5",
                        alpha=0.12, lw=0, label="η < 2/λ_max: the linearised dynamics are stable")
        e_eta.eta_line(ax, "eq14.eta", e, eq14)
    apriori = conditions.get("eq14.eta_apriori", {}).get("threshold")
    if apriori is not None and 0 < apriori < math.inf:
        with np.errstate(divide="ignore"):
            e_eta.eta_line(ax, "eq14.eta_apriori", e, 1 / lambda_max_of_e(1 / apriori, scale, L))
    c1 = conditions.get("corC1.e_eta", {}).get("threshold")
    if c1 is not None and math.isfinite(c1):
        e_eta.cor_c1(ax, [c1], [cfg["lr"]], " (at this run's η)")


FIGURES = {"loss": _loss, "spectrum": _spectrum, "probes": _probes, "e_eta": _e_eta}  # name → drawing function
