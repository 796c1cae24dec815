"""``ntkcheck verify``: train the real model, measure what the proof uses, evaluate every condition of
:mod:`bounds`, and compare the theory's predictions with the measured loss.

The run, in order (DESIGN.md §2):

1. problem constants: β_i, λ_min(M_iM_iᵀ), ‖x_i^mn‖² (X* = the minimum-norm solution, X_0 = 0), the GD curve;
2. probes at k = 0, ``ntk_every``, 2·``ntk_every``, …, K, each at W_k before update k: the NTK K = J Jᵀ and
   the training kernel K̃ = J J̃ᵀ (spectrum, rank, per-layer traces, drift from K_0), α_k = σ_min(G_{L−1,T})
   with its rank, the linearised predictions; at k = 0 also α over every step t (``alpha_steps="all"``);
3. training (:func:`ntkcheck.train.train`, the probes run inside it through its ``probe`` hook);
4. the quantities (plain floats, named as in DESIGN.md §1) → :func:`bounds.evaluate_all` → verdicts;
5. comparisons: measured contraction against ρ (Thm 4.3) and 1 − ηλ_min, the eigen-projection curve and
   the null-space plateau of K_0 against the measured loss, η against 2/λ_max along training.

Everything lands in the run folder (``<out>.partial`` until the end, so an interrupted verify resumes:
the training from its checkpoint, the probes from their files).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import bounds
from bounds.quantities import complete
from ntkcheck import io, problems
from ntkcheck import report as reports
from ntkcheck.config import ConfigError, TrainConfig
from ntkcheck.dynamics import NonFiniteKernel, fit_contraction, kernel_drift, ntk_summary
from ntkcheck.features import alpha as alpha_of, alpha_table
from ntkcheck.ntk import extreme_eigenvalues, ntk_operator, with_mode
from ntkcheck.train import (RESUMABLE, Interrupted, config_from_problem, initial_weights, make_problem, metrics_frame,
                            partial_folder, prepare_folder, resolve_device, train, versions)

NTK_METHODS = ("auto", "dense", "lanczos")
JACOBIANS = ("auto", "func", "structured")
DENSE_MAX = 4000  # ``ntk_method="auto"``: the dense kernel up to this many outputs N·b (4000 = paper scale)
TRAIN = "train"  # the training run's own folder inside the verify folder
PROBES = "probes"
SETTINGS = "verify.json"  # the configuration and probe options, written first: the mark of a verify folder


@dataclass(frozen=True)
class ProbeConfig:
    """What to measure along training. ``ntk_every`` = 0 probes only at k = 0 and k = K."""

    ntk_every: int = 500
    ntk_method: str = "auto"
    jacobian: str = "auto"
    alpha_steps: str = "T"  # "T" or "all" (α over every step t at k = 0)
    early: int = 50  # the early window [0, early) of the contraction fit

    def validate(self) -> None:
        if isinstance(self.ntk_every, bool) or not isinstance(self.ntk_every, int) or self.ntk_every < 0:
            raise ConfigError("--ntk-every", f"must be an integer ≥ 0 (got {self.ntk_every!r})")
        for flag, value, allowed in (("--ntk-method", self.ntk_method, NTK_METHODS),
                                     ("--jacobian", self.jacobian, JACOBIANS),
                                     ("--alpha-steps", self.alpha_steps, ("T", "all"))):
            if value not in allowed:
                raise ConfigError(flag, f"must be one of {', '.join(allowed)} (got {value!r})")
        if isinstance(self.early, bool) or not isinstance(self.early, int) or self.early < 3:
            raise ConfigError("--fit-early", f"must be an integer ≥ 3 (got {self.early!r})")

    def steps(self, iters: int) -> list[int]:
        """k = 0, every, 2·every, …, and K."""
        if self.ntk_every == 0:
            return sorted({0, iters})
        return sorted(set(range(0, iters + 1, self.ntk_every)) | {iters})

    def method_for(self, n_outputs: int) -> str:
        if self.ntk_method == "auto":
            return "dense" if n_outputs <= DENSE_MAX else "lanczos"
        return self.ntk_method


@dataclass
class VerifyResult:
    """The run folder, the training status ("completed" or "diverged"), report.json's content, the metrics."""

    folder: Path
    status: str
    report: dict
    metrics: pd.DataFrame


# -- 1. problem constants -------------------------------------------------------------------------------------


def problem_constants(problem: problems.Problem, T: int, step_scale: float) -> dict:
    """The data's quantities (:func:`bounds.gd_quantities`, numpy: β_i, σ_min(M_i)², ‖X_0 − X*‖² with X* the
    minimum-norm solution, F_GD(X_T), β₀, …) and the GD curve F(X_t^GD), t = 0..T, by the model's own code."""
    p = problem.to(device="cpu", dtype=torch.float64)
    curve = [float(problems.objective(p, X)) for X in problems.gd_trajectory(p, T, step_scale)]
    return bounds.gd_quantities(p.M.numpy(), p.Y.numpy(), T, step_scale) | {"F_gd": np.array(curve)}


# -- 2. probes ------------------------------------------------------------------------------------------------


def probe_dense(model, problem, cfg: TrainConfig, jacobian: str, K0: np.ndarray | None):
    """Dense K and K̃ (:func:`ntkcheck.dynamics.ntk_summary`) plus the drift from K_0."""
    numbers, arrays = ntk_summary(model, problem, cfg.T, lr=cfg.lr, method=jacobian, return_kernels=True)
    K = arrays.pop("K")
    arrays.pop("K_training")
    numbers["drift"] = kernel_drift(K0, K) if K0 is not None and np.linalg.norm(K0) > 0 else None
    return numbers, arrays, K


def probe_lanczos(model, problem, cfg: TrainConfig):
    """λ_max, λ_min of K and of ½(K̃ + K̃ᵀ) by Lanczos on the matrix-free operators (no drift, no plateau)."""
    m = with_mode(model, "true", dtype=torch.float64)
    p = problem.to(dtype=torch.float64)
    numbers = {}
    for key, kernel, part in (("K", "true", "full"), ("K_training", "training", "symmetric")):
        ext = extreme_eigenvalues(ntk_operator(m, p, cfg.T, kernel=kernel, part=part), method="lanczos", tol=1e-10)
        numbers[key] = {"lambda_max": ext.lambda_max, "lambda_min": ext.lambda_min, "method": "lanczos", **ext.extra}
    with torch.no_grad():
        X = m.unroll(p, cfg.T).X[-1]
    numbers["loss"] = float(problems.objective(p, X))
    numbers["alpha"] = alpha_of(m, p, cfg.T).as_dict()
    numbers["drift"] = None
    return numbers, {}, None


@torch.no_grad()
def max_feature_row_norm(model, problem: problems.Problem, T: int) -> float:
    """δ₃ = max_{t ≤ T, j} ‖G_{L−1,t}[j, :]‖₂ along the model's own trajectory (float64)."""
    m = with_mode(model, "true", dtype=torch.float64)
    p = problem.to(dtype=torch.float64)
    X = m.unroll(p, T).X
    return max(float(m.features(m.inputs(p, X[t - 1]))[-1].norm(dim=1).max()) for t in range(1, T + 1))


class Prober:
    """The ``probe`` hook of :func:`ntkcheck.train.train`: measures at the chosen k, one file per k, so that
    a resumed verify skips what an interrupted one already measured."""

    def __init__(self, folder: Path, cfg: TrainConfig, probes: ProbeConfig, problem: problems.Problem):
        self.folder, self.cfg, self.probes, self.problem = folder, cfg, probes, problem
        self.steps = set(probes.steps(cfg.iters))
        self.method = probes.method_for(problem.N * problem.b)
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, k: int, suffix: str) -> Path:
        return self.folder / f"k{k:06d}.{suffix}"

    def __call__(self, k: int, model) -> None:
        if k not in self.steps or self.path(k, "json").exists():
            return
        K0 = np.load(self.folder / "K0.npy") if (self.folder / "K0.npy").exists() else None
        try:
            if self.method == "dense":
                numbers, arrays, K = probe_dense(model, self.problem, self.cfg, self.probes.jacobian, K0)
            else:
                numbers, arrays, K = probe_lanczos(model, self.problem, self.cfg)
        except NonFiniteKernel as err:
            numbers, arrays, K = {"error": str(err)}, {}, None
        if k == 0 and K is not None:
            np.save(self.folder / "K0.npy", K)
            numbers["drift"] = kernel_drift(K, K)
        if k == 0:
            numbers["delta3"] = max_feature_row_norm(model, self.problem, self.cfg.T)
        if k == 0 and self.probes.alpha_steps == "all":
            arrays["alpha_over_t"] = alpha_table(with_mode(model, "true", dtype=torch.float64),
                                                 self.problem.to(dtype=torch.float64), self.cfg.T)[["t", "alpha", "rank"]].to_numpy()
        io.write_npz(self.path(k, "npz"), arrays)
        io.write_json(self.path(k, "json"), {"iteration": k, "method": self.method, **numbers})

    def load(self) -> dict[int, dict]:
        out = {}
        for path in sorted(self.folder.glob("k*.json")):
            k = int(path.stem[1:])
            out[k] = json.loads(path.read_text()) | {"arrays": dict(np.load(self.path(k, "npz")))}
        return out


def probe_metrics(points: dict[int, dict]) -> list[tuple[int, str, float]]:
    """Long-format rows (iteration, quantity, value) of every probe."""
    rows = []
    for k, p in sorted(points.items()):
        if "error" in p:
            continue
        for key in ("K", "K_training"):
            for name in ("lambda_max", "lambda_min", "rank"):
                if name in p[key]:
                    rows.append((k, f"ntk/{key}/{name}", float(p[key][name])))
        rows.append((k, "ntk/loss", p["loss"]))
        rows += [(k, f"alpha/{name}", float(p["alpha"][name])) for name in ("alpha", "sigma_max", "rank", "tol")]
        if p.get("drift"):
            rows += [(k, f"ntk/drift/{name}", float(v)) for name, v in p["drift"].items()]
        if p.get("K_vs_K_training"):  # detached training against the true kernel (DESIGN.md §4)
            rows += [(k, f"ntk/K_vs_K_training/{name}", float(v)) for name, v in p["K_vs_K_training"].items()]
            rows.append((k, "ntk/K_training/asymmetry", float(p["K_training"]["asymmetry"])))
    return rows


# -- 4. quantities and verdicts -------------------------------------------------------------------------------


def quantities(cfg: TrainConfig, constants: dict, points: dict[int, dict], wide: pd.DataFrame) -> dict:
    """The plain numbers :mod:`bounds` takes (names of DESIGN.md §1 and ``bounds.quantities``)."""
    init = points.get(0, {})
    q = {"N": cfg.N, "d": cfg.d, "b": cfg.b, "n": cfg.width, "L": cfg.L, "T": cfg.T, "e": cfg.e, "eta": cfg.lr,
         "k": int(wide.index[-1]), "step_scale": cfg.step_scale,
         **{k: v for k, v in constants.items() if k != "F_gd"}, "F0": float(wide["F_T"].iloc[0]),
         "F_k": wide["F_T"].to_numpy(), "P_min": float(wide["P_min"].min()), "P_max": float(wide["P_max"].max()),
         "Theta_L": theta_L(cfg, wide)}
    if "delta3" in init:
        q["delta3"] = init["delta3"]
    if "alpha" in init:
        q |= {"alpha0": init["alpha"]["alpha"], "alpha0_tol": init["alpha"]["tol"], "alpha0_rank": init["alpha"]["rank"]}
    if "K" in init:
        q |= {"lambda_max": init["K"]["lambda_max"], "lambda_min": init["K"]["lambda_min"]}
    return q


def evaluate_conditions(q: dict) -> list[dict]:
    """Every condition of :func:`bounds.registry` with its metadata and its verdict on ``q`` (completed with
    what follows from it: β₀, δ₄, …; :func:`bounds.quantities.complete`)."""
    q, rows = complete(q), []
    for c in bounds.registry():
        meta = {"key": c.key, "title": c.title, "source": c.source, "latex": c.latex, "status": c.status,
                "confidence": c.confidence, "required": c.required, "needs": list(c.needs),
                "constants": dict(c.constants)}
        try:
            verdict = c.evaluate(q).to_dict()
        except ArithmeticError as err:  # a bound that breaks on these numbers is reported, never a lost run
            verdict = {"key": c.key, "value": None, "threshold": None, "relation": c.relation, "holds": None,
                       "note": f"evaluation error: {type(err).__name__}: {err}"}
        rows.append(meta | verdict)
    return rows


def theta_L(cfg: TrainConfig, wide: pd.DataFrame) -> float:
    """Θ_L ≥ max_k ‖W_{L,k}‖₂ by ‖W_{L,k}‖ ≤ ‖W_{L,0}‖ + ‖W_{L,k} − W_{L,0}‖ (W_L is a column, so ‖·‖₂ = ‖·‖_F);
    exact under the deterministic init, where W_{L,0} = 0."""
    W0 = initial_weights(cfg)[f"W{cfg.L}"].double()
    return float(torch.linalg.norm(W0)) + float(wide[f"drift/W{cfg.L}"].max())


# -- 5. comparisons -------------------------------------------------------------------------------------------


def comparisons(cfg: TrainConfig, probes: ProbeConfig, points: dict[int, dict], wide: pd.DataFrame,
                verdicts: list[dict]) -> tuple[list[dict], dict]:
    """Theory against measurement: each row has the predicted and the measured value and their gap.

    Returns (rows, curves) where curves holds the predicted loss curves over k = 0..K."""
    F = wide["F_T"].to_numpy()
    K_iters = F.size - 1
    rows, curves = [], {"iteration": np.arange(F.size)}
    early = fit_or_none(F, 0, min(probes.early, F.size))
    late = fit_or_none(F, F.size // 2, F.size)
    rho = next((v["value"] for v in verdicts if v["key"] == "thm4_3.rate"), None)
    rho = float("nan") if rho is None else rho
    for name, fit in (("early", early), ("late", late)):
        if fit is not None:
            rows.append(_row(f"contraction per iteration, {name} window [{fit['start']}, {fit['stop']})",
                             "ρ (Thm 4.3)", rho, fit["rate"], extra=fit))
    init = points.get(0, {})
    if "linearised" in init:
        lin = init["linearised"]
        rows.append(_row("loss contraction from λ_min(K_0)", "(1 − ηλ_min)²", lin["loss_rate"],
                         late["rate"] if late else float("nan")))
        K0_eigs = init["arrays"]["K_eigenvalues"]
        proj = init["arrays"]["K_projections"]
        with np.errstate(over="ignore"):  # an unstable η (> 2/λ_max) predicts divergence: inf is the prediction
            curves["eigen_projection"] = 0.5 * np.sum((1 - cfg.lr * K0_eigs[None, :]) ** (2 * curves["iteration"][:, None])
                                                      * proj[None, :], axis=1)
        curves["lambda_min_rate"] = F[0] * lin["loss_rate"] ** curves["iteration"]
        for k in sorted({min(10, K_iters), min(100, K_iters), K_iters}):
            rows.append(_row(f"loss at k = {k}", "eigen-projection of K_0", float(curves["eigen_projection"][k]), float(F[k])))
        rows.append(_row("plateau (loss at the end)", "½‖P_null(K_0) r_0‖²", lin["plateau"], float(F[-1])))
        thresholds = [(k, p["threshold_training"], 2 / p["K"]["lambda_max"]) for k, p in sorted(points.items())
                      if "K" in p and p["K"]["lambda_max"] > 0]
        if thresholds:
            worst = min(thresholds, key=lambda x: x[2])
            rows.append(_row(f"stability: η against 2/λ_max(K_k), smallest over probes (k = {worst[0]})",
                             "2/λ_max", worst[2], cfg.lr, holds=cfg.lr < worst[2]))
    if math.isfinite(rho):
        curves["theorem_4_3"] = F[0] * rho ** curves["iteration"]
    return rows, curves


def fit_or_none(F: np.ndarray, start: int, stop: int) -> dict | None:
    try:
        return fit_contraction(F, start=start, stop=stop).as_dict()
    except ValueError:
        return None


def _row(what: str, theory: str, predicted: float, measured: float, *, holds=None, extra=None) -> dict:
    """One comparison; ``gap`` = measured/predicted (1 = the theory is exact)."""
    gap = measured / predicted if predicted not in (0.0,) and math.isfinite(predicted) else float("nan")
    return {"what": what, "theory": theory, "predicted": float(predicted), "measured": float(measured),
            "ratio": float(gap), "holds": holds, **({"fit": extra} if extra else {})}


# -- the run --------------------------------------------------------------------------------------------------


def verify(cfg: TrainConfig, probes: ProbeConfig, out: str | Path, *, resume: bool = False, callback=None,
           figures: bool = True) -> VerifyResult:
    """The whole verification run (module docstring); writes the run folder ``out``."""
    cfg = config_from_problem(cfg)
    probes.validate()
    out = Path(out)
    work = prepare_folder(out, resume, marker=SETTINGS)
    settings = {"config": cfg.to_dict(), "probes": asdict(probes)}
    if resume:
        check_resumable(json.loads((work / SETTINGS).read_text()), settings)
    else:
        io.write_json(work / SETTINGS, settings)
    device = resolve_device(cfg.device)
    problem = make_problem(cfg).to(device=device)
    constants = problem_constants(problem, cfg.T, cfg.step_scale)
    prober = Prober(work / PROBES, cfg, probes, problem)
    run_dir = work / TRAIN
    if not run_dir.exists():
        try:
            result = train(cfg, run_dir, resume=partial_folder(run_dir).exists(), callback=callback, probe=prober)
        except Interrupted as err:
            raise Interrupted(work, err.iteration) from None
        training = result.metrics
    else:
        training = pd.read_parquet(run_dir / "metrics.parquet")
    status = json.loads((run_dir / "report.json").read_text())["status"]

    points = prober.load()
    wide = training.pivot(index="iteration", columns="quantity", values="value")
    q = quantities(cfg, constants, points, wide)
    verdicts = evaluate_conditions(q)
    rows, curves = comparisons(cfg, probes, points, wide, verdicts)
    frame = pd.concat([training, metrics_frame(probe_metrics(points), out.name)], ignore_index=True)
    report = {
        "status": status, "run_id": out.name, "config": cfg.to_dict(), "probes": asdict(probes),
        "probe_method": prober.method, "dtype_probes": "float64", "versions": versions(),
        "summary": json.loads((run_dir / "report.json").read_text()),
        "problem": {"beta": q["beta"], "beta_i": q["beta_i"].tolist(), "sigma_min_sq_i": q["sigma_min_sq_i"].tolist(),
                    "dist_sq": q["dist_sq"], "F_gd": constants["F_gd"].tolist()},
        "conditions": verdicts, "comparisons": rows,
        "probe_points": {str(k): {key: v for key, v in p.items() if key != "arrays"} for k, p in sorted(points.items())},
    }
    io.write_frame(work / "metrics.parquet", frame, "parquet")
    io.write_frame(work / "metrics.csv", frame, "csv")
    io.write_npz(work / "spectra.npz", spectra(points) | {f"curve_{k}": v for k, v in curves.items()})
    io.write_json(work / "report.json", report)
    (work / "report.md").write_text(reports.markdown(report))
    if figures:
        reports.figures(report, frame, points, curves, work / "figures")
    work.rename(out)
    return VerifyResult(out, status, report, frame)


def check_resumable(saved: dict, given: dict) -> None:
    """A resumed verify must use the interrupted one's probes and model/data configuration."""
    if saved["probes"] != given["probes"]:
        raise ConfigError("--resume", f"the interrupted verify probed with {saved['probes']}; resume with the same "
                                      "probe options")
    for name, value in given["config"].items():
        if name not in RESUMABLE and saved["config"].get(name) != value:
            raise ConfigError(f"--{name.replace('_', '-')}", f"the interrupted verify used {saved['config'].get(name)!r}, "
                                                            f"not {value!r}; resume with the same value")


def spectra(points: dict[int, dict]) -> dict[str, np.ndarray]:
    """Eigenvalues of K and ½(K̃ + K̃ᵀ), and singular values of G_{L−1,T}, at every probe."""
    out = {}
    for k, p in points.items():
        out |= {f"k{k}_{name}": v for name, v in p["arrays"].items()}
    return out

