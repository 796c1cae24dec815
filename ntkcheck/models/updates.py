"""Update rules: the classical method a learned optimiser drives with its coordinate-wise step P_t.

Every rule is one of four backbones of the same two-line step, with α_i = s/β_i (s = ``step_scale``) and the
learned P_t ∈ (0, 2)^{N×d} multiplying the step coordinate-wise:

    X_t = prox_{α_i P_t r}(Y_{t−1} − α_i P_t ⊙ ∇f(Y_{t−1}))        (the prox only for ``prox`` and ``fista``)
    Y_t = X_t + μ_t (X_t − X_{t−1})                                  (only for ``nag`` and ``fista``; else Y_t = X_t)

from X_0 = Y_0, with Nesterov's schedule μ_t = (t − 1)/(t + 2) (the one of :func:`ntkcheck.problems.solvers.nag`),
or a learned accelerator A_t ∈ (0, 2)^{N×d} in place of μ_t (the PA models of Liu et al., ICML 2023). The network
reads its inputs at Y_{t−1}, where the gradient is taken. With P ≡ 1 each rule is its classical method exactly: GD,
Nesterov's accelerated gradient, proximal gradient (ISTA for the ℓ1 norm) and FISTA.

``gd`` is the paper's backbone (the only one Theorem 4.3 covers). On a problem without a nonsmooth part the prox is
the identity, so ``prox`` equals ``gd`` and ``fista`` equals ``nag`` there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ntkcheck.problems.base import Problem


@dataclass(frozen=True)
class UpdateRule:
    """One backbone of the module docstring: ``momentum`` adds the Y_t extrapolation, ``proximal`` the prox."""

    name: str
    momentum: bool
    proximal: bool

    def step(self, problem: Problem, t: int, X_prev: torch.Tensor, Y: torch.Tensor, P: torch.Tensor,
             grad: torch.Tensor, alpha: torch.Tensor, A: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(X_t, Y_t) from X_{t−1}, Y_{t−1}, P_t, ∇f(Y_{t−1}) and α (broadcast against X); ``A``: a learned
        accelerator A_t instead of μ_t."""
        scaled = alpha * P
        X = Y - scaled * grad
        if self.proximal:
            X = problem.prox(X, scaled)
        if not self.momentum:
            return X, X
        mu = (t - 1) / (t + 2) if A is None else A
        return X, X + mu * (X - X_prev)


RULES = {rule.name: rule for rule in (
    UpdateRule("gd", momentum=False, proximal=False),
    UpdateRule("nag", momentum=True, proximal=False),
    UpdateRule("prox", momentum=False, proximal=True),
    UpdateRule("fista", momentum=True, proximal=True),
)}


def rule(name: str) -> UpdateRule:
    """The update rule called ``name`` (one of :data:`RULES`); a ValueError naming ``update`` otherwise."""
    if name not in RULES:
        raise ValueError(f"update must be one of {', '.join(RULES)} (got {name!r})")
    return RULES[name]
