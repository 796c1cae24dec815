"""Two measured hypotheses about the paper's Fig. 5: a one-step freeze, and a dead cone. float64 throughout.

Derivations: docs/diagnostics.md. Symbols: docs/ARCHITECTURE.md §1 (φ the pre-activation of the readout,
P = 2σ(φ), rows (instance i, coordinate j) at i·d + j, steps t = 1..T).

**Freeze** (:func:`freeze`). At the deterministic initialisation (W_L = 0, no biases) every path from an inner
weight to the output carries the factor W_L = 0, so the first SGD step moves W_L alone:

    W_L' = −η ∇_{W_L}F = −η Σ_{t,r} (∂F/∂φ_{t,r}) G_{L−1,t}[r, :]ᵀ,      W_ℓ' = W_ℓ (ℓ < L)
    φ'_{t,r} = G_{L−1,t}[r, :] · W_L'          on the initial (GD) trajectory's inputs z_t

With W_ℓ = e·Q_ℓ, ReLU homogeneity gives G_{L−1,t}(e) = e^{L−1} G_{L−1,t}(1), and ∂F/∂φ = ½ ∂F/∂P at φ = 0 does
not depend on e (P ≡ 1: the trajectory is GD's whatever e). Hence

    φ' = η · e^{2(L−1)} · φ̂,      φ̂ independent of (e, η) at a fixed seed,      c = max|φ̂|,

measured as c = max|φ'| / (η Π_{ℓ<L} ‖W_ℓ‖₂²) (‖e·Q_ℓ‖₂ = e). P' = 2σ(φ') is within tol of 0 or 2 exactly when
|φ'| ≥ ln((2 − tol)/tol); the first pair saturates at η e^{2(L−1)} = ln((2 − tol)/tol) / c (``onset``).

**Dead cone** (:func:`dead_cone`). A pair (t, r) is dead when its wide-layer features are all exactly zero,
G_{L−1,t}[r, :] = 0: then φ_{t,r} = 0 and P_{t,r} = 1 (GD's step) whatever W_L. :func:`best_gain_live` bounds what
the live pairs alone can gain: it minimises F(X_T) over P = 2σ(u) ∈ (0, 2) on the live pairs, with P = 1 on the
dead ones, by L-BFGS from u = 0 (GD) with the exact autograd gradient (torch's LBFGS, not scipy's L-BFGS-B: scipy's
OpenBLAS threads ignore ``torch.set_num_threads``; docs/diagnostics.md §2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ntkcheck.config import LOSSES, ConfigError
from ntkcheck.instruments.ntk import with_mode
from ntkcheck.models.math_l2o import MathL2O, Trajectory
from ntkcheck.problems.meta import gd_path, objective, training_loss
from ntkcheck.problems.qp import Problem

ROWS = "(step t, instance i, coordinate j) at [t − 1, i, j], 1 ≤ t ≤ T"


# -- checks and shared pieces ---------------------------------------------------------------------------------


def _check_T(T) -> None:
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ConfigError("T", f"must be an integer ≥ 1 (got {T!r})")


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(name, f"must be a finite number > 0 (got {value!r})")


def _copy(model: MathL2O, dtype: torch.dtype | None = None) -> MathL2O:
    """A copy of ``model`` in its own gradient mode (detached or true), in ``dtype``."""
    return with_mode(model, "detached" if model.detach else "true", dtype=dtype)


def _float64(model: MathL2O, problem: Problem) -> tuple[MathL2O, Problem]:
    return _copy(model, torch.float64), problem.to(dtype=torch.float64)


def _inputs(model: MathL2O, problem: Problem, Y: list[torch.Tensor]) -> list[torch.Tensor]:
    """z_1..z_T, rows (N·d, 2), from the points Y_0..Y_{T−1} where the steps read them (z_t is built from Y_{t−1};
    Y = X for gd and prox, the extrapolated point for nag and fista)."""
    return [model.inputs(problem, Yt).detach() for Yt in Y]


def _gain(F_gd: float, F: float) -> float:
    """(F_GD(X_T) − F(X_T)) / F_GD(X_T), the paper's "last" gain."""
    return (F_gd - F) / F_gd


# -- hypothesis (a): the one-step freeze ---------------------------------------------------------------------


@dataclass(frozen=True)
class Freeze:
    """The first SGD step from W_L = 0, predicted (module docstring), and where it lands.

    ``W_L``: W_L' = −η∇_{W_L}F (n,); ``phi``: φ'_{t,r} on the GD inputs, (T, N, d); ``saturated``: the share of
    those pairs with P' = 2σ(φ') ≤ tol or ≥ 2 − tol; ``layer_norms``: ‖W_ℓ‖₂ for ℓ < L (each e at the deterministic
    init). ``F_gd`` = F(X_T) at W_0 = GD's; ``F_landing``, ``saturated_landing``: F(X_T) and the saturated share
    of the model with W_L' unrolled on its own trajectory (not GD's: its steps are P' ≠ 1). ``grad_norm`` =
    ‖∇_W F‖_F at W_0 (= ‖∇_{W_L}F‖), ``grad_norm_landing`` = ‖∇_W F‖_F at W' over all layers, both the gradient
    the model's mode trains with (detached or true)."""

    lr: float
    loss: str
    tol: float
    layer_norms: tuple[float, ...]
    W_L: np.ndarray = field(repr=False, compare=False)
    phi: np.ndarray = field(repr=False, compare=False)
    saturated: float
    F_gd: float
    F_landing: float
    saturated_landing: float
    grad_norm: float
    grad_norm_landing: float
    rows: str = ROWS

    @property
    def phi_max(self) -> float:
        """max_{t,r} |φ'_{t,r}|."""
        return float(np.abs(self.phi).max())

    @property
    def scale(self) -> float:
        """η Π_{ℓ<L} ‖W_ℓ‖₂² (= η e^{2(L−1)} at the deterministic init)."""
        return self.lr * math.prod(s * s for s in self.layer_norms)

    @property
    def c(self) -> float:
        """c = max|φ'| / (η Π_{ℓ<L} ‖W_ℓ‖₂²): independent of (e, η) at a fixed seed."""
        return self.phi_max / self.scale

    @property
    def onset(self) -> float:
        """η e^{2(L−1)} at which the largest |φ'| reaches ln((2 − tol)/tol), where P' saturates."""
        return math.log((2 - self.tol) / self.tol) / self.c

    @property
    def gain_landing(self) -> float:
        """(F_GD(X_T) − F_landing) / F_GD(X_T)."""
        return _gain(self.F_gd, self.F_landing)

    def as_dict(self) -> dict:
        """Plain numbers for JSON (not the arrays)."""
        return {"lr": self.lr, "loss": self.loss, "tol": self.tol, "layer_norms": list(self.layer_norms),
                "phi_max": self.phi_max, "saturated": self.saturated, "scale": self.scale, "c": self.c,
                "onset": self.onset, "F_gd": self.F_gd, "F_landing": self.F_landing, "gain_landing": self.gain_landing,
                "saturated_landing": self.saturated_landing, "grad_norm": self.grad_norm,
                "grad_norm_landing": self.grad_norm_landing, "rows": self.rows}


def _check_freeze_args(model: MathL2O, T, lr, loss, tol) -> None:
    _check_T(T)
    _check_positive("lr", lr)
    if loss not in LOSSES:
        raise ConfigError("loss", f"must be one of {', '.join(LOSSES)} (got {loss!r})")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < 1:
        raise ConfigError("tol", f"must be a number in (0, 1) (got {tol!r})")
    if model.bias:
        raise ConfigError("bias", "freeze covers the bias-free model; with biases b_L moves in the first step too, "
                                  "and φ' is no longer η·e^{2(L−1)}·φ̂")
    W_L = model.layer(model.L)[0]
    if bool((W_L != 0).any()):
        raise ConfigError("model", f"freeze needs W_L = 0, the deterministic initialisation (got ‖W_L‖_F = "
                                   f"{float(W_L.detach().double().norm()):.3g}): only there does the first step move "
                                   "W_L alone")


def _grad_norm(model: MathL2O, problem: Problem, T: int, loss: str) -> tuple[float, Trajectory, dict]:
    """‖∇_W loss‖_F over all parameters, the unroll it came from (detached), and the gradient by name."""
    params = dict(model.named_parameters())
    traj = model.unroll(problem, T)
    grads = torch.autograd.grad(training_loss(problem, traj, loss), list(params.values()))
    norm = math.sqrt(sum(float(g.square().sum()) for g in grads))
    detached = Trajectory([X.detach() for X in traj.X], [P.detach() for P in traj.P],
                          Y=[Y.detach() for Y in traj.Y])
    return norm, detached, dict(zip(params, grads))


def _saturated_share(P: torch.Tensor, tol: float) -> float:
    """The share of entries with P ≤ tol or P ≥ 2 − tol (training's ``P_saturated``)."""
    return float(((P <= tol) | (P >= 2 - tol)).double().mean())


def freeze(model: MathL2O, problem: Problem, T: int, *, lr: float, loss: str = "last", tol: float = 1e-2) -> Freeze:
    """The first plain-SGD step from the deterministic initialisation, exactly (module docstring).

    ``model`` must hold W_L = 0 and no biases (a ConfigError otherwise); the gradient is the one ``model``'s mode
    trains with, by autograd through :meth:`MathL2O.unroll` (detached and true coincide at W_L = 0). ``loss`` is
    the training loss (``last``, ``mean``, ``weighted``); ``tol`` the saturation tolerance. Adam's first step is
    not predicted."""
    _check_freeze_args(model, T, lr, loss, tol)
    m, p = _float64(model, problem)
    L = m.L
    grad_norm, traj, grads = _grad_norm(m, p, T, loss)
    W_L = -lr * grads[f"W{L}"]
    landing = _copy(m)
    landing.load_weights({**{k: v.detach() for k, v in m.named_parameters()}, f"W{L}": W_L})
    with torch.no_grad():
        phi = torch.stack([(m.features(Z)[-1] @ W_L)[:, 0] for Z in _inputs(m, p, traj.Y[:-1])])
        saturated = _saturated_share(2 * torch.sigmoid(phi), tol)
    grad_norm_landing, land, _ = _grad_norm(landing, p, T, loss)
    norms = tuple(float(torch.linalg.matrix_norm(m.layer(ell)[0].detach(), ord=2)) for ell in range(1, L))
    return Freeze(lr=float(lr), loss=loss, tol=float(tol), layer_norms=norms, W_L=W_L[:, 0].cpu().numpy(),
                  phi=phi.reshape(T, p.N, p.d).cpu().numpy(), saturated=saturated,
                  F_gd=float(objective(p, traj.X[-1])), F_landing=float(objective(p, land.X[-1])),
                  saturated_landing=_saturated_share(torch.stack(land.P), tol), grad_norm=grad_norm,
                  grad_norm_landing=grad_norm_landing)


# -- hypothesis (b): the dead cone ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadCone:
    """Pairs (t, r) of one unroll whose wide-layer features G_{L−1,t}[r, :] are all exactly zero.

    ``mask`` (T, N, d): dead pairs; ``share``: their share over all T·N·d pairs; ``per_step`` (T,): the share at
    each step; ``input_zero``: the share whose input to layer L−1 is already zero (h = G_{L−2,t}[r, :] = 0, with
    G_0 = Z_t: for L = 3, ReLU(z·W_1) = 0), the rest of the dead pairs having h outside every column's half-plane."""

    mask: np.ndarray = field(repr=False, compare=False)
    share: float
    per_step: np.ndarray = field(repr=False, compare=False)
    input_zero: float
    rows: str = ROWS

    def as_dict(self) -> dict:
        return {"share": self.share, "per_step": self.per_step.tolist(), "input_zero": self.input_zero,
                "rows": self.rows}


@torch.no_grad()
def dead_cone(model: MathL2O, problem: Problem, T: int) -> DeadCone:
    """The dead pairs along ``model``'s own trajectory (at W_0: GD's), from the dense features:

        dead(t, r)  ⇔  G_{L−1,t}[r, c] = 0 for every column c      (then φ_{t,r} = 0, P_{t,r} = 1)
    """
    _check_T(T)
    m, p = _float64(model, problem)
    dead, zero = [], []
    for Z in _inputs(m, p, m.unroll(p, T - 1).Y):
        G = [Z, *m.features(Z)]
        dead.append((G[-1] == 0).all(dim=-1))
        zero.append((G[-2] == 0).all(dim=-1))
    mask = torch.stack(dead).reshape(T, p.N, p.d).cpu().numpy()
    return DeadCone(mask=mask, share=float(mask.mean()), per_step=mask.reshape(T, -1).mean(axis=1),
                    input_zero=float(torch.stack(zero).double().mean()))


def final_iterate(problem: Problem, P: torch.Tensor, step_scale: float = 1.0) -> torch.Tensor:
    """X_T of X_t = X_{t−1} − (s/β_i)·P_t ⊙ ∇F(X_{t−1}) from X_0 = 0, for given step sizes P (T, N, d)
    (:func:`ntkcheck.problems.meta.gd_path`; P ≡ 1 is GD bit for bit)."""
    return gd_path(problem, P.shape[0], step_scale, P)[-1]


def live_steps(live: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """P (T, N, d): 2σ(u) on the live pairs (``live`` bool, u in its row-major order), 1 on the others."""
    return torch.ones(live.shape, dtype=u.dtype, device=u.device).masked_scatter(live, 2 * torch.sigmoid(u))


def live_objective(problem: Problem, live: torch.Tensor, step_scale: float = 1.0) -> Callable:
    """u ↦ F(X_T) (a differentiable tensor) for the step sizes :func:`live_steps`."""

    def F(u: torch.Tensor) -> torch.Tensor:
        return objective(problem, final_iterate(problem, live_steps(live, u), step_scale))

    return F


@dataclass(frozen=True)
class BestGain:
    """min F(X_T) over P ∈ (0, 2) on the ``live`` free pairs, P = 1 on the others, by L-BFGS from P ≡ 1 (GD).

    ``F`` is the value reached, a local optimum at best; ``converged`` says whether L-BFGS stopped on its own
    tolerances within ``max_iter`` iterations (``message`` says which), ``grad_max`` = max|∂F/∂u| where it
    stopped; ``gain`` = (F_gd − F)/F_gd; ``P`` the step sizes reached (T, N, d). The dead set is held fixed (the
    one it was given, e.g. the initial trajectory's)."""

    F_gd: float
    F: float
    live: int
    converged: bool
    message: str
    iterations: int
    evaluations: int
    max_iter: int
    grad_max: float
    P: np.ndarray = field(repr=False, compare=False)

    @property
    def gain(self) -> float:
        return _gain(self.F_gd, self.F)

    def as_dict(self) -> dict:
        return {"F_gd": self.F_gd, "F": self.F, "gain": self.gain, "live": self.live, "converged": self.converged,
                "message": self.message, "iterations": self.iterations, "evaluations": self.evaluations,
                "max_iter": self.max_iter, "grad_max": self.grad_max}


def _dead_tensor(dead_mask, problem: Problem, T: int) -> torch.Tensor:
    dead = torch.as_tensor(np.asarray(dead_mask))
    if dead.dtype != torch.bool or tuple(dead.shape) != (T, problem.N, problem.d):
        raise ConfigError("dead_mask", f"must be a boolean array of shape (T, N, d) = ({T}, {problem.N}, {problem.d}) "
                                       f"(got {str(dead.dtype)[6:]} of shape {tuple(dead.shape)})")
    return dead.to(problem.beta.device)


def _stop_reason(state: dict, max_iter: int, max_eval: int, grad_max: float, gtol: float) -> tuple[bool, str]:
    """(converged, why L-BFGS stopped), from torch's LBFGS state after one ``step``."""
    if state["n_iter"] >= max_iter:
        return False, f"iteration budget reached ({max_iter})"
    if state["func_evals"] >= max_eval:
        return False, f"evaluation budget reached ({max_eval})"
    if grad_max <= gtol:
        return True, f"max|∂F/∂u| ≤ gtol = {gtol:g}"
    return True, "the change in F or in u fell below ftol"


def best_gain_live(model: MathL2O, problem: Problem, T: int, dead_mask, *, max_iter: int = 200,
                   gtol: float = 1e-9, ftol: float = 1e-14) -> BestGain:
    """The best gain over GD found when the pairs of ``dead_mask`` (T, N, d) keep P = 1 and P = 2σ(u) is free on
    the others: ``torch.optim.LBFGS`` (strong Wolfe line search, history 20) on u from u = 0, i.e. from GD, for
    at most ``max_iter`` iterations and 2·``max_iter`` evaluations of F and its exact autograd gradient; it stops
    earlier when max|∂F/∂u| ≤ ``gtol`` or F or u change by less than ``ftol``.

    A bound in the optimisation's sense only: a local optimum found, for this dead set held fixed (the initial
    trajectory's, from :func:`dead_cone`), while training moves the trajectory and with it the dead set. Only
    ``model.step_scale`` is used from ``model``. With no live pair there is nothing to optimise: gain 0 exactly."""
    _check_T(T)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ConfigError("max_iter", f"must be an integer ≥ 1 (got {max_iter!r})")
    _check_positive("gtol", gtol)
    _check_positive("ftol", ftol)
    p = problem.to(dtype=torch.float64)
    live = ~_dead_tensor(dead_mask, p, T)
    F_gd = float(objective(p, gd_path(p, T, model.step_scale)[-1]))  # F at u = 0, evaluated as F(u) is
    F = live_objective(p, live, model.step_scale)
    u = torch.zeros(int(live.sum()), dtype=torch.float64, device=live.device, requires_grad=True)
    if u.numel() == 0:
        with torch.no_grad():
            return BestGain(F_gd, float(F(u)), 0, True, "no live pair", 0, 1, max_iter, 0.0, np.ones((T, p.N, p.d)))
    max_eval = 2 * max_iter
    opt = torch.optim.LBFGS([u], lr=1, max_iter=max_iter, max_eval=max_eval, tolerance_grad=gtol,
                            tolerance_change=ftol, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = F(u)
        value.backward()
        return value

    opt.step(closure)
    value = float(closure().detach())
    grad_max = float(u.grad.abs().max())
    converged, message = _stop_reason(opt.state[u], max_iter, max_eval, grad_max, gtol)
    P = live_steps(live, u.detach()).cpu().numpy()
    return BestGain(F_gd, value, u.numel(), converged, message, opt.state[u]["n_iter"], opt.state[u]["func_evals"],
                    max_iter, grad_max, P)


def best_gain_free(model: MathL2O, problem: Problem, T: int, **options) -> BestGain:
    """:func:`best_gain_live` with no dead pair: P free at every (t, i, j), for comparison with the live-only bound."""
    return best_gain_live(model, problem, T, np.zeros((T, problem.N, problem.d), dtype=bool), **options)


# -- both, at the initialisation ----------------------------------------------------------------------------------


def at_initialisation(model: MathL2O, problem: Problem, T: int, *, lr: float, loss: str = "last", tol: float = 1e-2,
                      best: bool = True) -> dict | None:
    """Both diagnostics at W_0 as plain numbers: ``freeze`` (:meth:`Freeze.as_dict`), ``dead_cone``
    (:meth:`DeadCone.as_dict`) and, with ``best``, ``best_gain_live`` (dead pairs at P = 1) and ``best_gain_free``
    (:meth:`BestGain.as_dict`). None where ``model`` is not at a deterministic initialisation (W_L ≠ 0 or biases),
    where the one-step prediction does not apply."""
    if model.bias or bool(model.layer(model.L)[0].detach().any()):
        return None
    cone = dead_cone(model, problem, T)
    out = {"freeze": freeze(model, problem, T, lr=lr, loss=loss, tol=tol).as_dict(), "dead_cone": cone.as_dict()}
    if best:
        out["best_gain_live"] = best_gain_live(model, problem, T, cone.mask).as_dict()
        out["best_gain_free"] = best_gain_free(model, problem, T).as_dict()
    return out
