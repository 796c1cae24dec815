"""Linearised training: train the first-order Taylor model of the unroll in W, with the real run's loss and optimiser.

For a learner with weights W (a dict of named tensors) and W_0 its initial weights, the unroll's iterates X_t(W)
(t = 1..T) are replaced by their linearisation at W_0 (neural-tangents' ``linearize``, here for the whole path):

    X_t^lin(W) = X_t(W_0) + J_t (W − W_0),        J_t = ∂X_t/∂W at W_0 (the true Jacobian: forward-mode, a JVP)

and X^lin is trained exactly as the real run is: the training loss of :func:`ntkcheck.problems.meta.training_loss`
(last F(X_T), mean, weighted) on any :class:`~ntkcheck.problems.base.Problem`, by the one trainer
(:func:`ntkcheck.engine.trainer.iteration`, :class:`Linearised` its learner) with SGD or Adam at η, from W_0, K
iterations, loss L_k measured at W_k.

**Which gradient.** The gradient of L(X^lin(W)) is J'ᵀ∇_X L, with J' = J for ``mode="true"``, and J' = J̃ (the
derivative of the detached unroll, :mod:`ntkcheck.instruments.ntk`) for ``mode="detached"``, which is what detached
BPTT computes on the real model: the linearised run then pairs J̃ᵀ with J exactly as the real run does at W_0. The
default is the learner's own mode (``model.detach``). J'ᵀg is one VJP of the mode's unroll at W_0 (its graph built
once); J Δ one JVP of the true unroll. On least squares with the loss "last" and SGD this is the residual recursion
r_{k+1} = (I − ηK̃)r_k of :func:`ntkcheck.instruments.dynamics.predict` (K̃ = J J̃ᵀ; K = J Jᵀ for ``mode="true"``), whose
loss is ½Σ_i(1 − ηλ_i)^{2k}(u_iᵀr_0)² when K̃ = K (every deterministic initialisation, where W_L = 0).

**The gap** (:func:`curve_gap`) between a linearised curve L^lin_k and a real one L_k: |L_k − L^lin_k| and its ratio to
|L_k| per iteration, their largest values and the last ones. Linearisation is exact at k = 0 and off by O(η²) at k = 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jvp, vjp

from ntkcheck.instruments.ntk import MODES, parameters, with_mode
from ntkcheck.models.base import Learner
from ntkcheck.problems.base import Problem
from ntkcheck.engine.trainer import iteration, new_state
from ntkcheck.problems.meta import reference_objective


@dataclass
class Path:
    """An unroll's iterates X_0..X_T (each (N, d)), as :func:`ntkcheck.problems.meta.training_loss` reads them."""

    X: list[torch.Tensor]
    P: list[torch.Tensor]


def path_fn(model: Learner, problem: Problem, T: int) -> Callable[[dict], torch.Tensor]:
    """The pure map W ↦ (X_1, …, X_T) stacked, shape (T, N, d), of ``model``'s unroll (its own ``detach`` mode)."""
    def f(W: dict) -> torch.Tensor:
        return torch.stack(functional_call(model, W, (problem, T)).X[1:])

    return f


class Linearisation:
    """X^lin(W) = X(W_0) + J(W − W_0) for t = 1..T (module docstring), differentiable in W with gradient J'ᵀ·."""

    def __init__(self, model: Learner, problem: Problem, T: int, *, mode: str | None = None):
        mode = ("detached" if model.detach else "true") if mode is None else mode
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)} (got {mode!r})")
        self.problem, self.T, self.mode = problem, T, mode
        self.W0 = parameters(model)
        self._f_true = path_fn(with_mode(model, "true"), problem, T)
        X, self._vjp = vjp(path_fn(with_mode(model, mode), problem, T), self.W0)
        self.X_W0 = X.detach()  # (T, N, d): X_1..X_T at W_0

    def jvp(self, delta: dict) -> torch.Tensor:
        """J Δ, shape (T, N, d)."""
        return jvp(self._f_true, (self.W0,), (delta,))[1]

    def vjp(self, g: torch.Tensor) -> dict:
        """J'ᵀ g for g of shape (T, N, d), one tensor per weight."""
        return self._vjp(g)[0]

    def __call__(self, W: dict) -> torch.Tensor:
        """X^lin(W) (T, N, d); autograd's gradient through it is J'ᵀ."""
        names = list(self.W0)
        return self.X_W0 + _Tangent.apply(self, names, *(W[k] - self.W0[k] for k in names))

    def unroll(self, W: dict) -> Path:
        """X_0, X_1^lin(W), …, X_T^lin(W) as a path for :func:`ntkcheck.problems.meta.training_loss`."""
        X0 = self.problem.X0()
        return Path([X0, *self(W).unbind(0)], [])


class _Tangent(torch.autograd.Function):
    """Δ ↦ J Δ forward, g ↦ J'ᵀ g backward (J' = J or J̃, :class:`Linearisation`)."""

    @staticmethod
    def forward(ctx, lin: Linearisation, names: list[str], *deltas: torch.Tensor) -> torch.Tensor:
        ctx.lin, ctx.names = lin, names
        return lin.jvp(dict(zip(names, deltas, strict=True)))

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        grads = ctx.lin.vjp(g)
        return (None, None, *(grads[k] for k in ctx.names))


@dataclass(frozen=True)
class Curve:
    """L_0..L_K of one run (NaN after a divergence) and the first iteration whose loss or gradient was not finite."""

    loss: np.ndarray
    diverged_at: int | None


class Linearised(nn.Module):
    """X^lin as a learner the one trainer drives: its parameters are those of ``model`` (named ``model.<name>``), its
    unroll X_0, X^lin_1(W), …, X^lin_T(W) at whatever weights it is called with (:class:`Linearisation`)."""

    def __init__(self, model: Learner, lin: Linearisation):
        super().__init__()
        self.model, self.lin = model, lin

    def forward(self, problem: Problem, T: int, state=None) -> Path:
        return self.lin.unroll(dict(self.model.named_parameters()))


def train_loop(learner: nn.Module, W0: dict, problem: Problem, T: int, *, loss: str, optimizer: str, lr: float,
               iters: int) -> Curve:
    """K = ``iters`` iterations of the one trainer (:func:`ntkcheck.engine.trainer.iteration`, one cell) of ``learner``
    from the weights ``W0`` (copied) with ``optimizer`` at η = ``lr`` on the training loss ``loss``: L_k measured at W_k
    before update k; the run stops at the first non-finite loss or gradient (its loss recorded, NaN after)."""
    cell = new_state(_leaves(W0), optimizer=optimizer, lr=lr, K=iters)
    F_ref = reference_objective(problem, T)
    losses = np.full(iters + 1, np.nan)
    for k in range(iters + 1):
        losses[k] = iteration(k, [cell], learner, problem, F_ref, T=T, loss=loss, record=[False],
                              saturation_tol=1e-2)[0].loss
        if cell.status != "running":
            break
    return Curve(losses, k if cell.status == "diverged" else None)


def _leaves(W: dict) -> dict:
    return {k: v.detach().clone().requires_grad_(True) for k, v in W.items()}


def train_linearised(model: Learner, problem: Problem, T: int, *, lr: float, iters: int, loss: str = "last",
                     optimizer: str = "sgd", mode: str | None = None) -> Curve:
    """The loss curve L^lin_0..L^lin_K of training X^lin (module docstring) from the model's weights W_0, with the
    training loss ``loss`` and ``optimizer`` at η = ``lr``; ``mode``: the gradient's Jacobian (default the model's).
    The model is not modified."""
    lin = Linearisation(model, problem, T, mode=mode)
    W0 = {f"model.{k}": v for k, v in lin.W0.items()}
    return train_loop(Linearised(model, lin), W0, problem, T, loss=loss, optimizer=optimizer, lr=lr, iters=iters)


def train_real(model: Learner, problem: Problem, T: int, *, lr: float, iters: int, loss: str = "last",
               optimizer: str = "sgd") -> Curve:
    """The real run's curve L_0..L_K by the same trainer as :func:`train_linearised` (the model's own gradient: detached
    BPTT when ``model.detach``). The model is not modified."""
    return train_loop(model, parameters(model), problem, T, loss=loss, optimizer=optimizer, lr=lr, iters=iters)


@dataclass(frozen=True)
class CurveGap:
    """|L_k − L^lin_k| (``absolute``) and |L_k − L^lin_k|/|L_k| (``relative``), k = 0..K over the iterations both
    curves are finite, with their largest values (and where) and their last values."""

    absolute: np.ndarray
    relative: np.ndarray
    max_absolute: float
    max_relative: float
    argmax_relative: int
    final_absolute: float
    final_relative: float

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("max_absolute", "max_relative", "argmax_relative", "final_absolute",
                                              "final_relative")}


def curve_gap(linearised, real) -> CurveGap:
    """The gap between a linearised loss curve and a real one (arrays or :class:`Curve`, k = 0..K each; compared over
    their common finite prefix)."""
    lin = np.asarray(getattr(linearised, "loss", linearised), dtype=np.float64)
    ref = np.asarray(getattr(real, "loss", real), dtype=np.float64)
    n = min(lin.size, ref.size)
    finite = np.isfinite(lin[:n]) & np.isfinite(ref[:n])
    n = int(np.argmin(finite)) if not finite.all() else n
    if n == 0:
        raise ValueError("the curves share no finite iteration")
    absolute = np.abs(ref[:n] - lin[:n])
    relative = absolute / np.abs(ref[:n])
    k = int(np.argmax(relative))
    return CurveGap(absolute, relative, float(absolute.max()), float(relative[k]), k, float(absolute[-1]),
                    float(relative[-1]))
