"""Theory against measurement: the measured quantities → :mod:`bounds` → verdicts, and the comparisons of the
theory's predictions with the measured loss.

Quantities (plain floats, named as in :data:`bounds.quantities.QUANTITIES`): the configuration, the data's
constants (:func:`bounds.gd_quantities`), the measured loss curve F(X_T^k), the extreme step multipliers P,
Θ_L ≥ max_k ‖W_{L,k}‖₂, and at k = 0 δ₃, α₀ with its tolerance and rank, λ_max and λ_min of K_0.

Comparisons (each a row with predicted, measured, measured/predicted and a verdict):
    bounds (verdict holds when measured ≤ predicted, FAILS otherwise):
        the measured per-iteration contraction (Theil–Sen, early and late windows) against ρ of Thm 4.3;
        the late contraction against (1 − ηλ_min(K_0))², the linearised dynamics' slowest rate;
        η against 2/λ_max(K_k), smallest over the probes (linearised stability);
    predictions (verdict agrees when |measured − predicted| ≤ PREDICTION_RTOL·|predicted|, differs otherwise):
        the eigen-projection curve ½Σ_i(1 − ηλ_i)^{2k}(u_iᵀr_0)² of K_0 against the loss at k = 10, 100, K;
        the null-space plateau ½‖P_null(K_0) r_0‖² against the final loss.
A row whose predicted or measured number is not finite is undecided.

Scope: the theorem is about Math-L2O's MLP under the deterministic initialisation. For another learner
(``model="lstm"``) the quantities of the MLP (α₀, δ₃, Θ_L, the width n, e, L, …) do not exist, and every condition that
needs one, or whose statement is the MLP's, evaluates as **does not apply** with the reason (:func:`not_applicable`;
``applies`` False, ``holds`` None). The conditions on the data, the step multipliers and the NTK (GD's rate, P ∈ (0, 2),
η against λ_max(K_0), the linearised rate 1 − ηλ_min) apply to any learner and are evaluated as for the MLP.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

import bounds
from bounds.quantities import complete
from ntkcheck import resources
from ntkcheck.build.experiment import make_problem
from ntkcheck.config import ConfigError, TrainConfig
from ntkcheck.instruments.dynamics import fit_contraction
from ntkcheck.instruments.probes import ProbeFailure, ProbeResult
from ntkcheck.problems import meta
from ntkcheck.problems import qp as problems

PREDICTION_RTOL = 0.1  # ntkcheck's own tolerance (not the paper's) for a linearised prediction to "agree"
MLP_QUANTITIES = ("n", "L", "e", "alpha0", "alpha0_tol", "alpha0_rank", "alpha0_rank_bound", "beta0", "delta3",
                  "delta4", "Theta_L", "gd_gz")  # quantities of Math-L2O's MLP (bounds.quantities.QUANTITIES)


def problem_constants(problem: problems.Problem, T: int, step_scale: float) -> dict:
    """The data's quantities (:func:`bounds.gd_quantities`, numpy: β_i, σ_min(M_i)², ‖X_0 − X*‖² with X* the
    minimum-norm solution, F_GD(X_T), β₀, …) and the GD curve ``F_gd`` = F(X_t^GD), t = 0..T: F(X_0), then the
    trainer's reference F_GD(X_1..X_T) (:func:`ntkcheck.problems.meta.gd_objective`)."""
    p = problem.to(device="cpu", dtype=torch.float64)
    curve = torch.cat([meta.objective(p, p.X0())[None], meta.gd_objective(p, T, step_scale)])
    return bounds.gd_quantities(p.M.numpy(), p.Y.numpy(), T, step_scale) | {"F_gd": curve.numpy()}


def thresholds(cfg: TrainConfig, *, C: float | None = None, data: bool = True) -> list[dict]:
    """The conditions a configuration alone decides (:func:`bounds.thresholds`), with the data's quantities of
    its seeded training instances when ``data`` (GD bounds, the a-priori η bound). ``C``: the constant of the
    Ω(·) laws of Lemmas 5.1–5.4 (None: thresholds at C = 1, verdict undecided)."""
    if C is not None and not (isinstance(C, (int, float)) and 0 < C < math.inf):
        raise ConfigError("C", f"must be a finite number > 0 (got {C!r})")
    constants = None
    if data:
        resources.check(cfg)  # drawing the instances and running GD for T steps must fit
        problem = make_problem(cfg)
        constants = bounds.gd_quantities(problem.M.numpy(), problem.Y.numpy(), cfg.T, cfg.step_scale)
    return bounds.thresholds(cfg.T, cfg.L, cfg.e, cfg.lr, N=cfg.N, d=cfg.d, b=cfg.b, n=cfg.width,
                             step_scale=cfg.step_scale, C=C, data=constants)


SWEEP_BOUNDS = ("cell", "e", "lr", "key", "source", "formula", "relation", "threshold", "note")  # sweep_bounds' columns


def sweep_bounds(cells: pd.DataFrame) -> pd.DataFrame:
    """Every condition :func:`bounds.thresholds` decides at each cell's configuration (T, L, e, η, N, d, b, n, s) of a
    sweep's ``cells`` (cells.parquet), given the cell's measured λ_max(K_0) and, under the deterministic init without a
    problem file, the data's quantities of its training instances (drawn again from its data seed:
    :func:`problem_constants`, once per draw). One row per cell and condition, columns :data:`SWEEP_BOUNDS`. Failed
    cells and cells of another learner than the MLP (whose e and L these bounds are about) have none. Scaling laws
    (Lemmas 5.1–5.4) at C = 1, their unknown constant."""
    data, rows = {}, []
    for c in cells[cells["status"] != "failed"].to_dict("records"):
        if c.get("model", "mlp") != "mlp":
            continue
        q = dict(_instance_constants(c, data))
        if c.get("lambda_max_0") is not None and np.isfinite(c["lambda_max_0"]):
            q["lambda_max"] = float(c["lambda_max_0"])
        for r in bounds.thresholds(int(c["T"]), int(c["L"]), float(c["e"]), float(c["lr"]), N=int(c["N"]),
                                   d=int(c["d"]), b=int(c["b"]), n=int(c["width"]),
                                   step_scale=float(c["step_scale"]), data=q):
            rows.append({"cell": c["cell"], "e": float(c["e"]), "lr": float(c["lr"]),
                         **{k: r[k] for k in SWEEP_BOUNDS[3:]}})
    return pd.DataFrame(rows, columns=list(SWEEP_BOUNDS))


def _instance_constants(c: dict, cache: dict) -> dict:
    """The data's quantities of cell ``c``'s training instances (cached per draw), or {} where they cannot be drawn
    again (a problem file) or do not bound this model's kernel (an initialisation other than deterministic)."""
    if c.get("problem_file") is not None or c["init"] != "deterministic":
        return {}
    key = (int(c["N"]), int(c["d"]), int(c["b"]), int(c["seed"]), int(c["T"]), float(c["step_scale"]),
           c.get("draw", "ntkcheck"))
    if key not in cache:
        cfg = TrainConfig(N=key[0], d=key[1], b=key[2], seed=key[3], T=key[4], step_scale=key[5], draw=key[6])
        constants = problem_constants(make_problem(cfg), key[4], key[5])
        cache[key] = {k: v for k, v in constants.items() if k != "F_gd"}
    return cache[key]


def theta_L(W0_L: torch.Tensor, metrics: pd.DataFrame, L: int) -> float:
    """Θ_L ≥ max_k ‖W_{L,k}‖₂ by ‖W_{L,k}‖ ≤ ‖W_{L,0}‖ + ‖W_{L,k} − W_{L,0}‖ (W_L is a column, so ‖·‖₂ = ‖·‖_F);
    exact under the deterministic init, where W_{L,0} = 0."""
    return float(torch.linalg.norm(W0_L.double())) + float(metrics[f"drift/W{L}"].max())


def quantities(cfg: TrainConfig, constants: dict, points: dict, metrics: pd.DataFrame, W0: dict) -> dict:
    """The plain numbers :mod:`bounds` takes, from the configuration, the data, the training metrics (wide) and
    the probe at k = 0 (when it was measured). ``eps``: the machine epsilon of the training dtype, in which the
    losses F0, F_k were computed (the rounding slack of the comparisons with GD, bounds/DERIVATIONS.md §2b).
    The MLP's own quantities (n, L, e, Θ_L; α₀ and δ₃ from the probe) only for ``model="mlp"``."""
    q = {"N": cfg.N, "d": cfg.d, "b": cfg.b, "T": cfg.T, "eta": cfg.lr,
         "k": int(metrics.index[-1]), "step_scale": cfg.step_scale, "eps": float(torch.finfo(getattr(torch, cfg.dtype)).eps),
         **{k: v for k, v in constants.items() if k != "F_gd"}, "F0": float(metrics["F_T"].iloc[0]),
         "F_k": metrics["F_T"].to_numpy(), "P_min": float(metrics["P_min"].min()),
         "P_max": float(metrics["P_max"].max())}
    if cfg.model == "mlp":
        q |= {"n": cfg.width, "L": cfg.L, "e": cfg.e, "Theta_L": theta_L(W0[f"W{cfg.L}"], metrics, cfg.L)}
    init = points.get(0)
    if isinstance(init, ProbeResult):
        q |= {"lambda_max": init.K.lambda_max, "lambda_min": init.K.lambda_min}
        if init.alpha is not None:
            q |= {"delta3": init.delta3, "alpha0": init.alpha.alpha, "alpha0_tol": init.alpha.rank.tol,
                  "alpha0_rank": init.alpha.rank.rank, "alpha0_rank_bound": init.alpha.rank_bound}
    return {k: v for k, v in q.items() if k not in not_applicable(cfg)}


def outside_setting(cfg: TrainConfig) -> str | None:
    """Why Thm 4.3 and the linearised least-squares predictions do not apply to ``cfg``'s objective or backbone (None
    for the paper's least squares with the gd backbone): they are derived for F = ½‖M X_T − Y‖² and
    X_t = X_{t−1} − (s/β_i)P_t ⊙ ∇F(X_{t−1})."""
    if cfg.problem == "qp" and cfg.update == "gd":
        return None
    return (f"Thm 4.3 is proved for least squares with the gd backbone; this run is problem {cfg.problem} with update "
            f"{cfg.update} (every quantity is still measured)")


def not_applicable(cfg: TrainConfig) -> dict[str, str]:
    """Quantity names and condition keys that do not apply to ``cfg``'s setting, each with the reason ({} for the
    MLP on the theorem's setting): outside it (:func:`outside_setting`), every condition whose declared setting
    (:class:`bounds.core.Setting`) does not cover the run's problem and update; for the LSTM, the MLP's quantities (:data:`MLP_QUANTITIES`), the equality with GD at W_0 (the MLP's W_L = 0),
    and, for the variant PA, monotone descent (the accelerator extrapolates after the step)."""
    outside = {c.key: why for c in bounds.registry() if (why := c.setting.outside(cfg.problem, cfg.update))}
    if cfg.model == "mlp":
        return outside
    scope = "Thm 4.3 and its conditions are about Math-L2O's MLP with the deterministic init"
    out = {name: f"{name} is a quantity of Math-L2O's MLP (its wide layer, width, e, L), which the LSTM "
                 f"(model {cfg.model}) does not have; {scope}" for name in MLP_QUANTITIES}
    out["init.gd_equality"] = (f"the LSTM (model {cfg.model}) is not GD at W_0: the equality holds for the MLP's "
                               f"W_L = 0 under the deterministic init; {scope}")
    if cfg.lstm_variant == "PA":
        out["step.descent"] = ("the LSTM's accelerator A_t extrapolates Y_t = X_t + A_t(X_t − X_{t−1}) after the step "
                               "(variant PA): a step can raise F")
    return out | outside


def evaluate_conditions(q: dict, scope: dict[str, str] | None = None) -> list[dict]:
    """Every condition of :func:`bounds.registry` with its metadata and its verdict on ``q`` (completed with
    what follows from it: β₀, δ₄, …; :func:`bounds.quantities.complete`). ``scope`` (quantity name or condition
    key → reason, :func:`not_applicable`): a condition named there, or needing a quantity named there,
    does not apply: ``applies`` False, ``holds`` None, its note "does not apply: <reason>"."""
    q, rows, scope = complete(q), [], scope or {}
    for c in bounds.registry():
        meta = {"key": c.key, "title": c.title, "source": c.source, "latex": c.latex, "status": c.status,
                "confidence": c.confidence, "required": c.required, "needs": list(c.needs),
                "constants": dict(c.constants)}
        reason = next((scope[name] for name in (c.key, *c.needs) if name in scope), None)
        if reason is not None:
            rows.append(meta | {"key": c.key, "value": None, "threshold": None, "relation": c.relation, "holds": None,
                                "note": f"does not apply: {reason}", "applies": False})
            continue
        try:
            verdict = c.evaluate(q).to_dict()
        except ArithmeticError as err:  # a bound that breaks on these numbers is reported, never a lost run
            verdict = {"key": c.key, "value": None, "threshold": None, "relation": c.relation, "holds": None,
                       "note": f"evaluation error: {type(err).__name__}: {err}"}
        rows.append(meta | verdict | {"applies": True})
    return rows


def learner_notes(cfg: TrainConfig) -> list[str]:
    """What a reader of a run of a learner other than the MLP must know: which conditions do not apply, and why."""
    if cfg.model == "mlp":
        return []
    return [f"the learner is the LSTM (model {cfg.model}, variant {cfg.lstm_variant}, {cfg.lstm_hidden} units in "
            f"{cfg.lstm_layers} layers): the conditions that need α₀, δ₃, Θ_L, the width, e or L, the equality with GD "
            "at W_0 and the rates of Thm 4.3 do not apply (the theorem is about Math-L2O's MLP with the deterministic "
            "init); GD's rate, the step range, η against λ_max(K_0) and the linearised rate apply to any learner"]


def comparisons(cfg: TrainConfig, early: int, points: dict, metrics: pd.DataFrame,
                verdicts: list[dict]) -> tuple[list[dict], dict]:
    """Theory against measurement (module docstring). Returns (rows, curves): curves holds the predicted loss
    curves over k = 0..K (``iteration``, ``eigen_projection``, ``lambda_min_rate``, ``theorem_4_3``)."""
    F = metrics["F_T"].to_numpy()
    K_iters = F.size - 1
    rows, curves = [], {"iteration": np.arange(F.size)}
    fits = {"early": fit_or_none(F, 0, min(early, F.size)), "late": fit_or_none(F, F.size // 2, F.size)}
    rate = next((v for v in verdicts if v["key"] == "thm4_3.rate"), {})
    rho = math.nan if rate.get("value") is None else rate["value"]
    theory = "ρ (Thm 4.3)" if rate.get("applies", True) else "ρ (Thm 4.3): does not apply to this learner or setting"
    for name, fit in fits.items():
        if fit is not None:
            rows.append(_row(f"contraction per iteration, {name} window [{fit['start']}, {fit['stop']})",
                             theory, rho, fit["rate"], kind="bound", extra=fit))
    init = points.get(0)
    objective = None if cfg.problem == "qp" else (
        f"the eigen-projection, plateau and 2/λ_max predictions linearise the loss ½‖r‖²; problem {cfg.problem}'s "
        "F is not ½‖r‖² of the residual whose kernel is measured")
    if objective is not None and isinstance(init, ProbeResult):
        rows.append(_row("loss along training", "eigen-projection of K_0, plateau, 2/λ_max", math.nan, float(F[-1]),
                         kind="prediction") | {"verdict": "does not apply", "note": objective})
    elif isinstance(init, ProbeResult) and init.linearised is not None:
        lin = init.linearised
        rows.append(_row("loss contraction from λ_min(K_0)", "(1 − ηλ_min)²", lin.loss_rate,
                         fits["late"]["rate"] if fits["late"] else math.nan, kind="bound"))
        with np.errstate(over="ignore"):  # an unstable η (> 2/λ_max) predicts divergence: inf is the prediction
            curves["eigen_projection"] = 0.5 * np.sum(
                (1 - cfg.lr * init.K.eigenvalues[None, :]) ** (2 * curves["iteration"][:, None])
                * lin.projections[None, :], axis=1)
        curves["lambda_min_rate"] = F[0] * lin.loss_rate ** curves["iteration"]
        for k in sorted({min(10, K_iters), min(100, K_iters), K_iters}):
            rows.append(_row(f"loss at k = {k}", "eigen-projection of K_0", float(curves["eigen_projection"][k]),
                             float(F[k]), kind="prediction"))
        rows.append(_row("plateau (loss at the end)", "½‖P_null(K_0) r_0‖²", lin.plateau, float(F[-1]),
                         kind="prediction"))
        thresholds = [(k, 2 / p.K.lambda_max) for k, p in sorted(points.items())
                      if isinstance(p, ProbeResult) and p.K.lambda_max > 0]
        if thresholds:
            k, worst = min(thresholds, key=lambda x: x[1])
            rows.append(_row(f"stability: η against 2/λ_max(K_k), smallest over probes (k = {k})",
                             "2/λ_max", worst, cfg.lr, kind="bound"))
    if math.isfinite(rho):
        curves["theorem_4_3"] = F[0] * rho ** curves["iteration"]
    return rows, curves


def fit_or_none(F: np.ndarray, start: int, stop: int) -> dict | None:
    """:func:`ntkcheck.instruments.dynamics.fit_contraction` over [start, stop) as a dict, or None where it cannot be fitted."""
    try:
        return fit_contraction(F, start=start, stop=stop).as_dict()
    except ValueError:
        return None


VERDICTS = {"bound": {True: "holds", False: "FAILS"}, "prediction": {True: "agrees", False: "differs"}}


def _row(what: str, theory: str, predicted: float, measured: float, *, kind: str, extra=None) -> dict:
    """One comparison; ``ratio`` = measured/predicted (1 = the theory is exact). ``holds``: for ``kind`` "bound",
    measured ≤ predicted; for "prediction", |measured − predicted| ≤ :data:`PREDICTION_RTOL`·|predicted|; None
    (undecided) where either number is not finite."""
    ratio = measured / predicted if predicted != 0.0 and math.isfinite(predicted) else math.nan
    holds = None
    if math.isfinite(predicted) and math.isfinite(measured):
        holds = (measured <= predicted if kind == "bound"
                 else abs(measured - predicted) <= PREDICTION_RTOL * abs(predicted))
    return {"what": what, "theory": theory, "kind": kind, "predicted": float(predicted), "measured": float(measured),
            "ratio": float(ratio), "holds": holds, "verdict": VERDICTS[kind].get(holds, "undecided"),
            **({"fit": extra} if extra else {})}


def notes(summary: dict, points: dict) -> list[str]:
    """What a reader must know before reading the verdicts: a divergence, probes that could not be measured,
    and probes where the kernel vanished (K_k = 0: no parameter moves the residual, the run is frozen there)."""
    out = []
    if summary["status"] == "diverged":
        where = summary["diverged_iterations"]
        out.append(f"training diverged (non-finite loss or gradient at k = {', '.join(map(str, where[:10]))}); "
                   f"F(X_T) at the end is {summary['F_T_final']:.4g}, and the conditions are evaluated on the "
                   "finite iterations only")
    failed = [f"k = {k}: {p.error}" for k, p in sorted(points.items()) if isinstance(p, ProbeFailure)]
    if failed:
        out.append("probes not measured: " + "; ".join(failed))
    zero = [k for k, p in sorted(points.items()) if isinstance(p, ProbeResult) and p.K.lambda_max == 0]
    if zero:
        out.append(f"the kernel is exactly zero (K_k = 0) at k = {', '.join(map(str, zero))}: no parameter moves the "
                   "residual there, so training is frozen; λ_min, 2/λ_max and the drift's direction are undefined "
                   "at those probes")
    return out
