"""Hand-designed optimisers, batched over instances, from X_0 = 0, on any :class:`~ntkcheck.problems.base.Problem`
(F_i = f_i + r_i: ``gradient`` is ∇f_i, ``prox`` the prox of r_i; the QP has r = 0).

Every method takes the per-instance step α_i = s/β_i (s = ``step_scale``; the paper's code uses
0.9999) and returns a :class:`Curve`: F_i(X_t) for t = 0..T and every instance i. A run whose iterate
stops being finite is recorded, not raised: the curve is NaN from that step on and ``diverged_at``
says where.

    GD      X_t = X_{t−1} − α ∇f(X_{t−1})
    NAG     X_t = Y_{t−1} − α ∇f(Y_{t−1}),   Y_t = X_t + μ_t (X_t − X_{t−1}),   Y_0 = X_0
            μ_t = (t − 1)/(t + 2) (Nesterov 1983, in the form of Su, Boyd & Candès 2016), or a constant μ
    prox    X_t = prox_{α r}(X_{t−1} − α ∇f(X_{t−1}))            (proximal gradient; ISTA for r = λ‖·‖₁)
    FISTA   X_t = prox_{α r}(Y_{t−1} − α ∇f(Y_{t−1})),  Y_t as NAG's (Beck & Teboulle 2009, with NAG's μ_t)
    Adam    m_t = β₁m_{t−1} + (1 − β₁)g_t,   v_t = β₂v_{t−1} + (1 − β₂)g_t²,   g_t = ∇F(X_{t−1})
            X_t = X_{t−1} − α m̂_t/(√v̂_t + ε),   m̂_t = m_t/(1 − β₁ᵗ),  v̂_t = v_t/(1 − β₂ᵗ)
            (Kingma & Ba 2015; ε outside the root, as torch.optim.Adam)

GD, NAG, prox and FISTA are the classical methods of the update rules gd, nag, prox and fista
(:mod:`ntkcheck.models.updates`, :data:`CLASSICAL`): the untrained learner (P ≡ 1) is each of them exactly.

The reference optimum F_i* of a composite problem (:func:`reference_optimum`) is FISTA with gradient restart
(O'Donoghue & Candès 2015: the momentum of instance i restarts when ⟨Y_{t−1} − X_t, X_t − X_{t−1}⟩ > 0) run until the
problem's duality gap, a certified bound gap_i ≥ F_i(x_i) − F_i*, is at most tol·max(1, |F_i|) for every instance.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pandas as pd
import torch

from ntkcheck.problems.base import Problem

# The paper's Adam grid (official scripts, Fig. 8): β₁ ∈ {.1, .3, .5, .7, .9}, β₂ ∈ {.95, .955, …, 1.0}.
# β₂ = 1 leaves v̂_t = v_t/(1 − 1ᵗ) undefined, so the grid here stops at .995.
ADAM_BETA1 = (0.1, 0.3, 0.5, 0.7, 0.9)
ADAM_BETA2 = tuple(round(0.95 + 0.005 * i, 3) for i in range(10))


@dataclass
class Curve:
    """F_i(X_t) for t = 0..T (shape (T+1, N), NaN after a divergence), the last finite iterate, and
    the first step t at which X_t was not finite (None if it stayed finite). ``X`` holds every iterate
    (T+1, N, d) when asked for with ``keep=True``."""

    f: torch.Tensor
    X_last: torch.Tensor
    diverged_at: int | None = None
    X: torch.Tensor | None = None

    @property
    def F(self) -> torch.Tensor:
        """F(X_t) = Σ_i f_i(X_t), shape (T+1,)."""
        return self.f.sum(-1)


def _alpha(problem: Problem, step_scale: float) -> torch.Tensor:
    """α_i = s/β_i as a column (…, N, 1)."""
    return (step_scale / problem.beta)[..., None]


def iterate(problem: Problem, T: int, step, state, *, keep: bool = False) -> Curve:
    """Run ``X, state = step(t, state)`` for t = 1..T from ``state`` (whose first entry is X_0).

    Stops at the first non-finite X_t and records it; every method below is one ``step``.
    """
    X = state[0]
    f = [problem.objective_per_instance(X)]
    path = [X] if keep else None
    diverged_at = None
    for t in range(1, T + 1):
        X_new, state = step(t, state)
        if not bool(torch.isfinite(X_new).all()):
            diverged_at = t
            break
        X = X_new
        f.append(problem.objective_per_instance(X))
        if keep:
            path.append(X)
    f = torch.stack(f)
    if diverged_at is not None:
        f = torch.cat([f, f.new_full((T + 1 - len(f), *f.shape[1:]), float("nan"))])
    return Curve(f, X, diverged_at, torch.stack(path) if keep else None)


@torch.no_grad()
def gd(problem: Problem, T: int, *, step_scale: float = 1.0, keep: bool = False) -> Curve:
    """Gradient descent X_t = X_{t−1} − (s/β_i)∇f(X_{t−1}) from X_0 = 0."""
    alpha = _alpha(problem, step_scale)

    def step(t, state):
        X = state[0] - alpha * problem.gradient(state[0])
        return X, (X,)

    return iterate(problem, T, step, (problem.X0(),), keep=keep)


@torch.no_grad()
def nag(problem: Problem, T: int, *, step_scale: float = 1.0, momentum: float | None = None,
        keep: bool = False) -> Curve:
    """Nesterov's accelerated gradient from X_0 = Y_0 = 0 (module docstring).

    ``momentum=None`` takes μ_t = (t − 1)/(t + 2), for which, when s ≤ 1, every instance satisfies
    f_i(x_T) − f_i* ≤ 2β_i‖x_0 − x_i*‖²/(s(T + 1)²); a float is a constant μ.
    """
    alpha = _alpha(problem, step_scale)

    def step(t, state):
        X_prev, Y = state
        X = Y - alpha * problem.gradient(Y)
        mu = (t - 1) / (t + 2) if momentum is None else momentum
        return X, (X, X + mu * (X - X_prev))

    X0 = problem.X0()
    return iterate(problem, T, step, (X0, X0), keep=keep)


@torch.no_grad()
def prox_gradient(problem: Problem, T: int, *, step_scale: float = 1.0, keep: bool = False) -> Curve:
    """Proximal gradient X_t = prox_{α r}(X_{t−1} − α∇f(X_{t−1})), α_i = s/β_i, from X_0 = 0 (ISTA for r = λ‖·‖₁; GD
    when r = 0). For s ≤ 1, F(X_t) is non-increasing in t (Beck & Teboulle 2009, Lemma 2.3)."""
    alpha = _alpha(problem, step_scale)

    def step(t, state):
        X = problem.prox(state[0] - alpha * problem.gradient(state[0]), alpha)
        return X, (X,)

    return iterate(problem, T, step, (problem.X0(),), keep=keep)


@torch.no_grad()
def fista(problem: Problem, T: int, *, step_scale: float = 1.0, keep: bool = False) -> Curve:
    """FISTA from X_0 = Y_0 = 0 (module docstring): NAG's μ_t = (t − 1)/(t + 2) around the proximal step, so that for
    s ≤ 1, F_i(x_T) − F_i* ≤ 2β_i‖x_0 − x_i*‖²/(s(T + 1)²)."""
    alpha = _alpha(problem, step_scale)

    def step(t, state):
        X_prev, Y = state
        X = problem.prox(Y - alpha * problem.gradient(Y), alpha)
        return X, (X, X + (t - 1) / (t + 2) * (X - X_prev))

    X0 = problem.X0()
    return iterate(problem, T, step, (X0, X0), keep=keep)


CLASSICAL = {"gd": gd, "nag": nag, "prox": prox_gradient, "fista": fista}  # the update rule → its classical method


def classical(update: str):
    """The classical method of the update rule ``update`` (:data:`CLASSICAL`): ``method(problem, T, step_scale=s,
    keep=False) → Curve``; a ValueError naming ``update`` otherwise."""
    if update not in CLASSICAL:
        raise ValueError(f"update must be one of {', '.join(CLASSICAL)} (got {update!r})")
    return CLASSICAL[update]


@dataclass(frozen=True)
class Optimum:
    """The reference optimum of every instance: X (N, d), F = F_i(x_i) (N,), the certified ``gap`` ≥ F_i(x_i) − F_i*
    (N,), and the FISTA iterations it took."""

    X: torch.Tensor
    F: torch.Tensor
    gap: torch.Tensor
    iterations: int


@torch.no_grad()
def reference_optimum(problem: Problem, *, tol: float = 1e-10, max_iter: int = 200_000,
                      check_every: int = 50) -> Optimum:
    """F_i* to within tol·max(1, |F_i*|) (certified by ``problem.duality_gap``): FISTA with step 1/β_i and gradient
    restart per instance (module docstring), in float64, checked every ``check_every`` iterations and at the last. A
    RuntimeError when ``max_iter`` iterations do not reach the tolerance."""
    if not hasattr(problem, "duality_gap"):
        raise TypeError(f"reference_optimum needs a problem with a duality_gap (got a {type(problem).__name__})")
    for name, value in (("tol", tol), ("max_iter", max_iter), ("check_every", check_every)):
        if isinstance(value, bool) or not value > 0:
            raise ValueError(f"{name} must be > 0 (got {value!r})")
    p = problem.to(dtype=torch.float64)
    alpha = (1.0 / p.beta)[..., None]
    X = Y = p.X0()
    c = torch.ones_like(p.beta)[..., None]  # steps since instance i's last restart, as NAG's t
    for k in range(1, max_iter + 1):
        X_new = p.prox(Y - alpha * p.gradient(Y), alpha)
        restart = ((Y - X_new) * (X_new - X)).sum(-1, keepdim=True) > 0
        c = torch.where(restart, torch.ones_like(c), c + 1)
        Y = X_new + (c - 1) / (c + 2) * (X_new - X)
        Y = torch.where(restart, X_new, Y)
        X = X_new
        if k % check_every == 0 or k == max_iter:
            gap, F = p.duality_gap(X), p.objective_per_instance(X)
            if bool((gap <= tol * F.abs().clamp_min(1.0)).all()):
                return Optimum(X, F, gap, k)
    raise RuntimeError(f"reference_optimum: the duality gap is still {float(gap.max()):.3g} after {max_iter} "
                       "iterations; raise max_iter")


def optimum_value(problem: Problem) -> float:
    """F* = Σ_i F_i*: 0 for least squares without a regulariser (M_i of full row rank b ≤ d reaches any y_i), else
    :func:`reference_optimum`'s, certified to 1e-10 relative."""
    if not hasattr(problem, "duality_gap"):
        return 0.0
    return float(reference_optimum(problem).F.sum())


@torch.no_grad()
def adam(problem: Problem, T: int, *, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
         step_scale: float = 1.0, keep: bool = False) -> Curve:
    """Adam with the per-instance step α_i = s/β_i (module docstring)."""
    alpha = _alpha(problem, step_scale)

    def step(t, state):
        X, m, v = state
        g = problem.gradient(X)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g.square()
        m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
        X = X - alpha * m_hat / (v_hat.sqrt() + eps)
        return X, (X, m, v)

    X0 = problem.X0()
    return iterate(problem, T, step, (X0, torch.zeros_like(X0), torch.zeros_like(X0)), keep=keep)


def adam_grid(problem: Problem, T: int, *, beta1s=ADAM_BETA1, beta2s=ADAM_BETA2, eps: float = 1e-8,
              step_scale: float = 1.0) -> dict[tuple[float, float], Curve]:
    """Adam at every (β₁, β₂) of the grid, the paper's way of tuning it (step s/β_i fixed)."""
    return {(b1, b2): adam(problem, T, beta1=b1, beta2=b2, eps=eps, step_scale=step_scale)
            for b1, b2 in itertools.product(beta1s, beta2s)}


def grid_summary(curves: dict[tuple[float, float], Curve]) -> pd.DataFrame:
    """Per step t: the best (lowest F(X_T) at the end) grid point's F(X_t), and the min, median and max
    of F(X_t) over the grid (the spread the paper draws as a band). Diverged points are left out."""
    keys = list(curves)
    F = torch.stack([curves[k].F for k in keys])  # (grid, T+1)
    best = min(keys, key=lambda k: float(torch.nan_to_num(curves[k].F[-1], nan=float("inf"))))
    F = torch.where(torch.isfinite(F), F, torch.nan)
    return pd.DataFrame({
        "t": range(F.shape[1]),
        "F_best": curves[best].F.numpy(),
        "F_min": F.nan_to_num(nan=float("inf")).min(0).values.numpy(),
        "F_median": F.nanmedian(0).values.numpy(),
        "F_max": F.nan_to_num(nan=float("-inf")).max(0).values.numpy(),
        "best_beta1": best[0],
        "best_beta2": best[1],
    })
