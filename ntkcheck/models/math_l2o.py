"""Math-L2O: gradient descent with coordinate-wise step sizes chosen by a small shared network.

For t = 1..T, with the same weights W at every coordinate j, instance i and step t:

    z_t   = (∇F(X_{t−1}), X_{t−1})                   per coordinate, 2 numbers (rows of Z_t ∈ R^{Nd×2})
    G_0   = Z_t,   G_ℓ = ReLU(G_{ℓ−1} W_ℓ + b_ℓ)      ℓ = 1..L−1 (b_ℓ = 0 unless ``bias``)
    P_t   = 2σ(G_{L−1} W_L + b_L) ∈ (0, 2)^{Nd}
    X_t   = X_{t−1} − (s/β_i) · P_t ⊙ ∇F(X_{t−1})    s = ``step_scale`` (1 in the paper's analysis)

The last line is the paper's backbone, ``update="gd"``; :mod:`ntkcheck.models.updates` has its momentum and proximal
variants (``nag``, ``prox``, ``fista``), which take z_t at the extrapolated point Y_{t−1} where ∇F is evaluated.

With ``detach=True`` (the paper's code) z_t is a constant for backpropagation: gradients reach W only
through P_t, and reach X_{t−1} only through the ∇F(X_{t−1}) factor of the update.

Cells: weights with a leading cell axis (W_ℓ of shape (C, in, out), passed with ``torch.func.functional_call``)
unroll C independent models at once, on one shared problem or on a problem per cell (tensors (C, N, …)); X_t and
P_t are then (C, N, d) and cell c's numbers are those of the model holding cell c's weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ntkcheck.config import WIDE_LAYERS
from ntkcheck.models import init as inits
from ntkcheck.models.angular import prefix_sums, readout_from_prefix
from ntkcheck.models.base import copy_with_detach
from ntkcheck.models import updates
from ntkcheck.problems.base import Problem


@dataclass
class Trajectory:
    """One unroll: iterates X_0..X_T (each (N, d)), step sizes P_1..P_T (each (N, d)), and, when
    asked for, the share of active ReLUs in the wide layer at each step (detached scalars)."""

    X: list[torch.Tensor]
    P: list[torch.Tensor]
    active: list[torch.Tensor] | None = None
    Y: list[torch.Tensor] | None = None  # Y_0..Y_T, where the gradients are taken (the X_t themselves for gd, prox)


class MathL2O(nn.Module):
    """The step-size network φ_W and the unrolled optimiser it drives.

    Parameters are named as in the paper: ``W1..WL`` of shape (in, out), and ``b1..bL`` when
    ``bias=True``. ``widths`` are the hidden widths n_1..n_{L−1}; the paper's model is (2, n).

    ``wide_layer`` chooses how layer L−1 and the readout are evaluated inside :meth:`unroll`:
    ``angular`` uses the exact prefix-sum form of :mod:`ntkcheck.models.angular` (needs a 2-D, bias-free
    input to layer L−1), ``dense`` forms G_{L−1} (R×n), ``auto`` takes ``angular`` whenever it applies.
    Both give the same numbers; :meth:`features` always returns the dense G_ℓ.
    """

    def __init__(self, widths, *, bias: bool = False, detach: bool = True, step_scale: float = 1.0,
                 wide_layer: str = "auto", update: str = "gd"):
        super().__init__()
        self.widths = tuple(int(w) for w in widths)
        self.bias, self.detach, self.step_scale = bias, detach, step_scale
        self.update = updates.rule(update)
        if wide_layer not in WIDE_LAYERS:
            raise ValueError(f"wide_layer must be one of {', '.join(WIDE_LAYERS)} (got {wide_layer!r})")
        fits = not bias and (self.widths[:-1] or (2,))[-1] == 2
        if wide_layer == "angular" and not fits:
            raise ValueError("wide_layer='angular' needs a bias-free wide layer with a 2-D input; use dense")
        self.angular = fits and wide_layer != "dense"
        for ell, (fan_in, out) in enumerate(inits.layer_shapes(self.widths), start=1):
            self.register_parameter(f"W{ell}", nn.Parameter(torch.zeros(fan_in, out, dtype=torch.float64)))
            if bias:
                self.register_parameter(f"b{ell}", nn.Parameter(torch.zeros(out, dtype=torch.float64)))

    @property
    def L(self) -> int:
        return len(self.widths) + 1

    def layer(self, ell: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(W_ℓ, b_ℓ) for ℓ = 1..L; b_ℓ is None without bias."""
        return getattr(self, f"W{ell}"), getattr(self, f"b{ell}", None)

    def load_weights(self, params: dict) -> "MathL2O":
        """Copy a dict of weights (from :mod:`ntkcheck.models.init`) into the parameters, keeping dtype/device."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                p.copy_(params[name])
        return self

    def with_detach(self, detach: bool) -> "MathL2O":
        """A copy with the same weights, architecture and wide-layer path, with ``detach`` set (the Learner protocol)."""
        return copy_with_detach(self, detach)

    # -- the network φ_W, on rows z ∈ R² ---------------------------------------------------------

    def features(self, Z: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """G_1..G_upto (default upto = L−1) for input rows Z (R, 2): G_ℓ = ReLU(G_{ℓ−1} W_ℓ + b_ℓ)."""
        G, out = Z, []
        for ell in range(1, (self.L - 1 if upto is None else upto) + 1):
            W, b = self.layer(ell)
            G = torch.relu(G @ W if b is None else G @ W + b.unsqueeze(-2))
            out.append(G)
        return out

    def readout(self, G_last: torch.Tensor) -> torch.Tensor:
        """P = 2σ(G_{L−1} W_L + b_L), one step size per row."""
        W, b = self.layer(self.L)
        phi = (G_last @ W).squeeze(-1)
        return 2.0 * torch.sigmoid(phi if b is None else phi + b)  # b (…, 1) broadcasts over the rows

    def step_size(self, Z: torch.Tensor) -> torch.Tensor:
        """P = 2σ(φ_W(z)) for rows Z (R, 2)."""
        return self.step_size_and_activity(Z)[0]

    def step_size_and_activity(self, Z: torch.Tensor, prefix=None) -> tuple[torch.Tensor, torch.Tensor]:
        """P for rows Z, and the share of active ReLUs in the wide layer (detached; one per cell).

        ``prefix``: the angular layer's sorted prefix sums (:meth:`angular_prefix`), when already built.
        """
        if not self.angular:
            G_last = self.features(Z)[-1]
            return self.readout(G_last), (G_last.detach() > 0).double().mean(dim=(-2, -1))
        h = self.features(Z, upto=self.L - 2)[-1] if self.L > 2 else Z
        phi, active = readout_from_prefix(h, *(prefix or self.angular_prefix()))
        _, b_out = self.layer(self.L)
        share = active.detach().double().sum(dim=-1) / (active.shape[-1] * self.widths[-1])
        return 2.0 * torch.sigmoid(phi if b_out is None else phi + b_out), share

    def angular_prefix(self):
        """(θ, prefix) of the wide layer for :mod:`ntkcheck.models.angular`; None on the dense path."""
        if not self.angular:
            return None
        return prefix_sums(self.layer(self.L - 1)[0], self.layer(self.L)[0][..., 0])

    # -- the optimiser -------------------------------------------------------------------------------

    def inputs(self, problem: Problem, X: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
        """Z = rows (∇F(X)_j, X_j), shape (…, N·d, 2); detached when ``detach``."""
        grad = problem.gradient(X) if grad is None else grad
        Z = torch.stack(torch.broadcast_tensors(grad, X), dim=-1).flatten(-3, -2)
        return Z.detach() if self.detach else Z

    def unroll(
        self,
        problem: Problem,
        T: int,
        *,
        X0: torch.Tensor | None = None,
        inputs: list[torch.Tensor] | None = None,
        record_active: bool = False,
    ) -> Trajectory:
        """Run T Math-L2O steps from X_0 (default 0) under the model's update rule (:mod:`ntkcheck.models.updates`;
        ``gd``, the paper's, is X_t = X_{t−1} − (s/β_i)·P_t ⊙ ∇F(X_{t−1})).

        ``inputs`` replaces z_1..z_T by given rows (N·d, 2): the model then takes its step sizes from
        frozen inputs, the map whose ordinary gradient is what detached backpropagation computes.
        """
        X = Y = problem.X0() if X0 is None else X0
        alpha = (self.step_scale / problem.beta)[..., None]
        traj = Trajectory(X=[X], P=[], active=[] if record_active else None, Y=[Y])
        prefix = self.angular_prefix()  # the weights are fixed during an unroll: sort the columns once
        for t in range(1, T + 1):
            grad = problem.gradient(Y)
            Z = self.inputs(problem, Y, grad) if inputs is None else inputs[t - 1]
            P, share = self.step_size_and_activity(Z, prefix)
            P = P.unflatten(-1, Y.shape[-2:])
            X, Y = self.update.step(problem, t, X, Y, P, grad, alpha)
            traj.X.append(X)
            traj.Y.append(Y)
            traj.P.append(P)
            if record_active:
                traj.active.append(share)
        return traj

    def forward(self, problem: Problem, T: int, **kwargs) -> Trajectory:
        """The module's forward pass is the unroll, so ``torch.func.functional_call`` sees the whole map."""
        return self.unroll(problem, T, **kwargs)

    @torch.no_grad()
    def features_at(self, problem: Problem, t: int, X0: torch.Tensor | None = None) -> list[torch.Tensor]:
        """G_{1,t}..G_{L−1,t}: the layer features at step t (1 ≤ t), rows ordered (instance, coordinate).

        Recomputes the trajectory up to X_{t−1}; nothing is kept during ordinary unrolls.
        """
        if t < 1:
            raise ValueError(f"t must be ≥ 1 (got {t})")
        Y = self.unroll(problem, t - 1, X0=X0).Y[-1]
        return self.features(self.inputs(problem, Y))


def build(widths, params: dict, *, bias=False, detach=True, step_scale=1.0, wide_layer="auto", update="gd",
          device=None, dtype=torch.float64):
    """A MathL2O with the given weights, on ``device`` in ``dtype`` (moved there before the weights are copied in, so
    that weights on any device, ``meta`` included, never pass through the CPU)."""
    model = MathL2O(widths, bias=bias, detach=detach, step_scale=step_scale, wide_layer=wide_layer, update=update)
    return model.to(device=device, dtype=dtype).load_weights(params)
