"""What the NTK code needs from a learned optimiser: the :class:`Learner` protocol.

A learner is an ``nn.Module`` whose named parameters are the weights W and whose unroll is a pure function of W
on a problem: r(W) = vec(M X_T(W) − Y). With ``detach`` the network's inputs z_t are constants for backprop (the
paper's code), and the ordinary gradient of the unroll is the detached gradient ∇̃; without it, it is the true one.
:meth:`Learner.with_detach` gives the twin in the other mode, so that the true map (Jacobian J) and the detached
map (J̃) can be formed without knowing the class.
"""

from __future__ import annotations

import copy
from typing import Iterator, Protocol, TypeVar, runtime_checkable

import torch
from torch import nn

from ntkcheck.problems.qp import Problem

M = TypeVar("M", bound=nn.Module)


@runtime_checkable
class Path(Protocol):
    """One unroll: iterates X_0..X_T (each (N, d)) and step multipliers P_1..P_T."""

    X: list[torch.Tensor]
    P: list[torch.Tensor]


@runtime_checkable
class Learner(Protocol):
    """A learned optimiser the NTK code can differentiate (module docstring).

    ``named_parameters()``: the weights W by name (``nn.Module``'s). ``unroll(problem, T, X0=None)``: X_0..X_T as a
    pure function of W (two calls give the same numbers). ``detach``: True when the network's inputs are constants
    for backprop. ``with_detach(detach)``: a copy with the same weights in the given mode.
    """

    detach: bool

    def named_parameters(self, *args, **kwargs) -> Iterator[tuple[str, nn.Parameter]]: ...

    def unroll(self, problem: Problem, T: int, *, X0: torch.Tensor | None = None) -> Path: ...

    def with_detach(self, detach: bool) -> "Learner": ...


def copy_with_detach(module: M, detach: bool) -> M:
    """A deep copy of ``module`` with ``detach`` set: same weights (bit for bit), dtype and device; every parameter
    trainable and without ``.grad``."""
    twin = copy.deepcopy(module)
    twin.detach = bool(detach)
    for p in twin.parameters():
        p.grad = None
        p.requires_grad_(True)
    return twin
