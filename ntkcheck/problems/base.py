"""What a learned optimiser, the trainer and the instruments need from a problem: the :class:`Problem` protocol.

A problem holds N instances of a composite objective, stacked (X has shape (…, N, d)):

    F_i(x) = f_i(x) + r_i(x)        f_i smooth with constant β_i (∇f_i is β_i-Lipschitz), r_i convex (r_i = 0: smooth)

and gives, per instance, F_i, ∇f_i, β_i and the proximal map of r_i with a coordinate-wise step,

    prox_{a r}(v) = argmin_x  r(x) + ½ Σ_j (x_j − v_j)² / a_j        (the identity when r = 0).

``residual(X)`` is the network output whose Gram matrix is the empirical NTK (r = M X − Y for least squares, where
F = ½‖r‖²). For a composite objective it is the output of the data term, on which the loss acts (the LASSO: the smooth
part's M X − Y, f = ½‖r‖²; logistic regression: the logits M X); F is then not ½‖r‖², so predictions built on
F = ½‖r‖² do not apply, while linearised training (:mod:`ntkcheck.engine.linearised`) does. A family may also offer
``duality_gap(X)`` (…, N), a certified bound on F_i(x_i) − F_i*, on which
:func:`ntkcheck.problems.solvers.reference_optimum` stops. ``select(index)`` keeps the instances of some cells of a problem stacked per cell (tensors (C, N, …)),
and ``to(device, dtype)`` moves every tensor. :class:`ntkcheck.problems.qp.Problem` (the paper's least squares) is
one implementation; a new family is a new module with a class of these methods.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Problem(Protocol):
    """N instances of min_x f_i(x) + r_i(x) (module docstring); ``beta`` (…, N) holds β_i."""

    beta: torch.Tensor

    @property
    def N(self) -> int: ...

    @property
    def d(self) -> int: ...

    def X0(self) -> torch.Tensor:
        """The initial iterate, (N, d)."""

    def objective_per_instance(self, X: torch.Tensor) -> torch.Tensor:
        """F_i(x_i) = f_i(x_i) + r_i(x_i), shape (…, N)."""

    def gradient(self, X: torch.Tensor) -> torch.Tensor:
        """∇f_i(x_i) of the smooth part, shape (…, N, d)."""

    def prox(self, V: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """prox_{step·r}(V) coordinate-wise (``step`` broadcasts against V); V itself when r = 0."""

    def residual(self, X: torch.Tensor) -> torch.Tensor:
        """The output whose Gram matrix over the weights is the empirical NTK, shape (…, N, ·)."""

    def select(self, index) -> "Problem":
        """The problems of cells ``index`` of a problem stacked per cell (leading axis C)."""

    def to(self, device=None, dtype=None) -> "Problem":
        """Every tensor on ``device`` in ``dtype``."""


def stack(problems: list) -> Problem:
    """Problems of one family stacked on a leading cell axis (tensors (C, N, …)), for a batch of cells drawn apart: a
    family's dataclass fields stacked field by field (a nested problem likewise, an unset field stays None, any other
    value, which the cells share, kept)."""
    first = problems[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(problems)
    if dataclasses.is_dataclass(first):
        return type(first)(**{f.name: stack([getattr(p, f.name) for p in problems]) for f in dataclasses.fields(first)})
    if any(p != first for p in problems):
        raise ValueError(f"cells stacked together must share {first!r}")
    return first
