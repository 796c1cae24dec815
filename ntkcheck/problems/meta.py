"""The meta-problem of learning to optimise, defined once for any :class:`~ntkcheck.problems.base.Problem`: the
training loss of an unroll, what is recorded per step, the GD reference, and one meta-gradient step.

An unroll X_0..X_T (any object with a list ``X``; step multipliers ``P``, and the MLP's ``active``, where recorded)
on N instances has F(X_t) = Σ_i F_i(x_{t,i}) (``problem.objective_per_instance``, summed over instances; one per cell
for a batch of cells, X (C, N, d)). The training losses:

    last      F(X_T)
    mean      (1/T) Σ_{t=1..T} F(X_t)
    weighted  Σ_t t·F(X_t) / Σ_t t

The GD reference runs the paper's backbone with P ≡ 1 (or given step multipliers P_t) from X_0:

    X_t = X_{t−1} − (s/β_i) P_t ⊙ ∇f_i(X_{t−1}),      F_GD = F(X_1^GD), …, F(X_T^GD)

and the per-step metrics of an unroll, measured against it (``F_gd`` = F_GD(X_1..X_T), shape (…, T)):

    F_T        F(X_T)
    gain       (F_GD(X_T) − F(X_T)) / F_GD(X_T)                     (the paper's "last" gain)
    gain_mean  (1/T) Σ_{t=1..T} (F_GD(X_t) − F(X_t)) / F_GD(X_t)
    P_min, P_mean, P_max over all P entries (t, i, j); P_saturated: the share within ``tol`` of 0 or 2
    active_share: the mean share of active ReLUs in the MLP's wide layer, where the unroll recorded it

The trainer (:func:`ntkcheck.engine.trainer.iteration`, every loop's one iteration) is built from these pieces: the
training loss, :func:`backward` (the finite losses backpropagated, the finite check per cell), :func:`updates` and the
divergence policy :func:`run_status`.

A problem may offer ``objective_path(Xs)``, F(X_1..X_T) at once (the least squares' reads M_i once for all t,
equal to the F(X_t) one by one to rounding); otherwise each F(X_t) is evaluated on its own.
"""

from __future__ import annotations

import math

import torch

from ntkcheck.config import LOSSES
from ntkcheck.problems.base import Problem
from ntkcheck.problems.solvers import classical


def objective(problem: Problem, X: torch.Tensor) -> torch.Tensor:
    """F(X) = Σ_i F_i(x_i) (one per cell for X (C, N, d))."""
    return problem.objective_per_instance(X).sum(-1)


def objective_path(problem: Problem, Xs) -> torch.Tensor:
    """F(X_1), …, F(X_T) of the iterates ``Xs``, shape (…, T): the problem's ``objective_path`` where it has one."""
    if hasattr(problem, "objective_path"):
        return problem.objective_path(Xs)
    return torch.stack([objective(problem, X) for X in Xs], dim=-1)


def training_loss(problem: Problem, traj, kind: str) -> torch.Tensor:
    """The training loss ``kind`` (last / mean / weighted, module docstring) of the unroll ``traj`` (one per cell)."""
    if kind not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)} (got {kind!r})")
    if kind == "last":
        return objective(problem, traj.X[-1])
    F_t = objective_path(problem, traj.X[1:])
    if kind == "mean":
        return F_t.mean(-1)
    t = torch.arange(1, F_t.shape[-1] + 1, dtype=F_t.dtype, device=F_t.device)
    return (t * F_t).sum(-1) / t.sum()


# -- the GD reference ---------------------------------------------------------------------------------------


def gd_path(problem: Problem, T: int, step_scale: float = 1.0, P=None) -> list[torch.Tensor]:
    """X_0..X_T of X_t = X_{t−1} − (s/β_i) P_t ⊙ ∇f_i(X_{t−1}) from X_0 (``P`` (T, N, d); None: P ≡ 1, plain GD).

    Differentiable in P. With P ≡ 1 given, the iterates are GD's bit for bit."""
    alpha = (step_scale / problem.beta)[..., None]
    X = problem.X0()
    path = [X]
    for t in range(T):
        step = alpha if P is None else alpha * P[t]
        X = X - step * problem.gradient(X)
        path.append(X)
    return path


def gd_objective(problem: Problem, T: int, step_scale: float = 1.0) -> torch.Tensor:
    """F_GD(X_1..X_T): GD with step s/β_i from X_0 (shape (…, T), one curve per problem)."""
    return objective_path(problem, gd_path(problem, T, step_scale)[1:])


def reference_objective(problem: Problem, T: int, step_scale: float = 1.0, update: str = "gd") -> torch.Tensor:
    """F(X_1..X_T) of the classical method of the backbone ``update`` with P ≡ 1 (the reference the gains are
    measured against, shape (…, T)): :func:`gd_objective` for ``gd`` (the paper's), else
    :func:`ntkcheck.problems.solvers.classical` (NAG, proximal gradient, FISTA) with step s/β_i."""
    if update == "gd":
        return gd_objective(problem, T, step_scale)
    curve = classical(update)(problem, T, step_scale=step_scale)
    return curve.f[1:].sum(-1).movedim(0, -1)


# -- what is recorded per step --------------------------------------------------------------------------------


def gain_metrics(problem: Problem, X: list[torch.Tensor], F_gd: torch.Tensor) -> dict[str, torch.Tensor]:
    """F_T, gain and gain_mean (module docstring) of the iterates X_0..X_T against ``F_gd`` = F_GD(X_1..X_T)."""
    with torch.no_grad():
        F_t = objective_path(problem, X[1:])
        return {"F_T": F_t[..., -1], "gain": (F_gd[..., -1] - F_t[..., -1]) / F_gd[..., -1],
                "gain_mean": ((F_gd - F_t) / F_gd).mean(-1)}


def step_metric_tensors(problem: Problem, traj, F_gd: torch.Tensor, tol: float) -> dict[str, torch.Tensor]:
    """The per-step metrics of the module docstring, as tensors (one entry per cell for a batch of cells):
    :func:`gain_metrics`, the P statistics with saturation tolerance ``tol``, and ``active_share`` where recorded."""
    with torch.no_grad():
        active = getattr(traj, "active", None)
        return gain_metrics(problem, traj.X, F_gd) | _P_statistics(traj.P, tol) | (
            {} if active is None else {"active_share": torch.stack(active, dim=-1).mean(-1)})


def _P_statistics(Ps: list[torch.Tensor], tol: float) -> dict[str, torch.Tensor]:
    """P_min, P_mean, P_max and P_saturated over every entry of P_1..P_T; none for a learner without a step
    multiplier (LISTA)."""
    if not Ps:
        return {}
    P = torch.stack(Ps, dim=-3).flatten(-3)  # (…, T·N·d)
    return {"P_min": P.amin(-1), "P_mean": P.mean(-1), "P_max": P.amax(-1),
            "P_saturated": ((P <= tol) | (P >= 2 - tol)).double().mean(-1)}


def step_metrics(problem: Problem, traj, F_gd: torch.Tensor, tol: float) -> dict[str, float]:
    """:func:`step_metric_tensors` of a single run, as floats."""
    return {k: float(v) for k, v in step_metric_tensors(problem, traj, F_gd, tol).items()}


# -- the meta-gradient step -----------------------------------------------------------------------------------------


def meta_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """Plain SGD (the paper) or Adam, with learning rate η = ``lr``, over ``params``."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr)


def grads_finite(params) -> bool:
    """Whether every gradient of ``params`` that exists is finite."""
    return all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params)


def backward(loss: torch.Tensor, params: list) -> list[bool]:
    """Backpropagate the finite entries of ``loss`` (one training loss, or one per cell of a batch) and say, for each,
    whether it and every gradient of its parameters ``params[c]`` are finite. A non-finite loss is not
    backpropagated: its parameters keep the zero gradients the optimiser's ``zero_grad`` left. The cells do not
    interact, so the gradient of the sum Σ_c loss_c is each cell's own."""
    losses = loss.reshape(-1)
    finite = torch.isfinite(losses)
    if bool(finite.any()):
        torch.where(finite, losses, torch.zeros_like(losses)).sum().backward()
    out = []
    for ok, cell in zip(finite.tolist(), params):
        cell = list(cell)
        if not ok:  # its slice of the sum was 0, but 0·∞ in its graph can leave NaN there
            for p in cell:
                if p.grad is not None:
                    p.grad.zero_()
        out.append(ok and grads_finite(cell))
    return out


# -- the divergence policy -------------------------------------------------------------------------------------


def updates(k: int, K: int) -> bool:
    """Whether iteration k of 0..K takes its optimiser step (when finite): every one but the last, whose W_{K+1}
    would never be measured."""
    return k < K


def run_status(k: int, K: int, loss: float, finite: bool, on_divergence: str) -> str:
    """The divergence policy: the status of a run after its iteration k of 0..K, with training loss ``loss``, and
    ``finite`` whether that loss and every gradient were finite (an iteration that is not takes no step):

        diverged   not finite and on_divergence = "stop": the run ends at k
        completed  k = K and the loss is finite
        diverged   k = K and the loss is not finite (on_divergence = "skip" goes on to K)
        running    otherwise
    """
    if not finite and on_divergence == "stop":
        return "diverged"
    if k == K:
        return "completed" if math.isfinite(loss) else "diverged"
    return "running"
