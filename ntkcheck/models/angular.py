"""The wide layer of Math-L2O by angular prefix sums: exact, O((R + n)·log n) time, O(R + n) memory.

The wide layer L−1 sees a 2-D, bias-free input h ∈ R² per row and feeds the readout W_L:

    φ(h) = Σ_c W_L[c] · ReLU(h · w_c),        w_c = column c of W_{L−1} ∈ R^{2×n}

Column c is active (h·w_c > 0) exactly when its angle θ_c lies strictly within π/2 of the angle ψ of h.
With the coefficient vectors a_c = W_L[c]·w_c ∈ R², the layer is

    φ(h) = h · S(h),        S(h) = Σ_{c : |θ_c − ψ| < π/2 (mod 2π)} a_c,

and S(h) is a difference of two prefix sums of the a_c sorted by angle (the arc is contiguous once the
sorted angles are listed twice, the second time shifted by 2π). A row with h = 0 activates nothing.

Autograd and forward-mode AD go through ``cumsum`` and ``gather``; the arc ends come from
``searchsorted`` and are piecewise constant in the weights, so the derivatives are those of the dense
layer wherever no h·w_c is exactly 0 (where the dense layer is not differentiable either).
Prefix sums are accumulated in float64 whatever the working dtype.

Every function takes an optional leading cell axis (weights (C, 2, n) and (C, n), rows (C, R, 2)): each cell
sorts its own columns, and cell c's numbers are those of the unbatched call on cell c.
"""

from __future__ import annotations

import math

import torch


def column_order(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Angles θ_c of the columns of W (…, 2, n), sorted, and the permutation that sorts them."""
    theta = torch.atan2(W[..., 1, :].detach(), W[..., 0, :].detach()).double()
    theta, order = torch.sort(theta, dim=-1)
    return theta, order


def arc_bounds(h: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices [lo, hi) into the doubled sorted angles (θ, θ + 2π) of the columns active for each row.

    The open arc is (ψ − π/2, ψ + π/2) with ψ = atan2(h_2, h_1) and ψ − π/2 taken in [−π, π).
    ``theta`` may carry a leading batch dimension (B, n), with rows h (R, 2) shared or (B, R, 2) per batch entry:
    the result then has shape (B, R). The arc is open at both ends: lo is searched from the right, hi from the left.
    """
    psi = torch.atan2(h[..., 1].detach(), h[..., 0].detach()).double()
    start = torch.remainder(psi - math.pi / 2 + math.pi, 2 * math.pi) - math.pi
    doubled = torch.cat((theta, theta + 2 * math.pi), dim=-1)
    start = start.expand(*theta.shape[:-1], -1)
    lo = torch.searchsorted(doubled, start.contiguous(), right=True)
    hi = torch.searchsorted(doubled, start + math.pi, right=False)
    return lo, hi


def prefix_sums(W: torch.Tensor, w_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted column angles θ (…, n) and the prefix sums (…, 2n + 1, 2) of a_c = w_out[c]·w_c over (θ, θ + 2π).

    Depends on the weights only: compute it once per unroll and reuse it at every step.
    """
    theta, order = column_order(W)
    w_sorted = W.take_along_dim(order.unsqueeze(-2), dim=-1) * w_out.take_along_dim(order, dim=-1).unsqueeze(-2)
    a = w_sorted.double().transpose(-1, -2)  # (…, n, 2), sorted by angle
    zero = a.new_zeros(*a.shape[:-2], 1, 2)
    return theta, torch.cat((zero, torch.cumsum(torch.cat((a, a), dim=-2), dim=-2)), dim=-2)


def _rows_of(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table[…, index, :] for a table (…, m, 2) and indices (…, R): one ``index_select`` over the flattened cells,
    each row read as one complex number (several times faster than ``gather``/advanced indexing on CPU, and 2–3×
    faster than selecting rows of two reals, forward and backward; the values are the same bits)."""
    m = table.shape[-2]
    cells = index.shape[:-1]
    table = table.expand(*cells, *table.shape[-2:]) if table.ndim - 2 < len(cells) else table
    offset = (torch.arange(math.prod(cells), device=index.device) * m).reshape(*cells, 1)
    rows = torch.view_as_complex(table.reshape(-1, 2)).index_select(0, (index + offset).reshape(-1))
    return torch.view_as_real(rows).reshape(*index.shape, 2)


def arc_sums(h: torch.Tensor, theta: torch.Tensor, prefix: torch.Tensor, bounds=None) -> tuple[torch.Tensor, torch.Tensor]:
    """S(h) = Σ_{c active} a_c = prefix[hi] − prefix[lo] (R, 2, float64; 0 for h = 0), and the active
    columns per row. S(h) is also ∂φ/∂h. ``bounds``: (lo, hi) from :func:`arc_bounds`, when already known.

    An empty arc (a row h = 0, or no column within 90° of h) reads both ends at index 0, the table's constant zero
    row: S = 0 exactly, and its ±gradient lands on that constant and is dropped, as the dense layer's is exactly 0
    (added into a live row, +a and −a interleaved with other rows' terms leave rounding noise). Both ends are read
    in one lookup, [hi; lo], whose backward is one accumulation into the table."""
    lo, hi = arc_bounds(h, theta) if bounds is None else bounds
    empty = (hi == lo) | ((h[..., 0] == 0) & (h[..., 1] == 0))
    hi, lo = hi.masked_fill(empty, 0), lo.masked_fill(empty, 0)
    # split, not slices: the backward of a split is one cat, a slice's zero-fills the whole lookup
    at_hi, at_lo = _rows_of(prefix, torch.cat((hi, lo), dim=-1)).split(hi.shape[-1], dim=-2)
    return at_hi - at_lo, hi - lo


def row_norms_sq(h: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """‖ReLU(h W)‖² per row h (R, 2) for W = W_{L−1} (2, n), without forming the R×n features:

        ‖ReLU(h W)‖² = Σ_{c active} (h·w_c)² = hᵀ B(h) h,    B(h) = Σ_{c active} w_c w_cᵀ,

    with B(h) a difference of prefix sums of the outer products w_c w_cᵀ (entries 11, 12, 22) over the doubled
    sorted angles, as S(h) is for the readout. float64; 0 for h = 0."""
    theta, order = column_order(W)
    w = W.double().take_along_dim(order.unsqueeze(-2), dim=-1)
    outer = torch.stack((w[0] * w[0], w[0] * w[1], w[1] * w[1]), dim=-1)  # (n, 3), sorted by angle
    prefix = torch.cat((outer.new_zeros(1, 3), torch.cumsum(torch.cat((outer, outer)), dim=0)))
    lo, hi = arc_bounds(h, theta)
    nonzero = (h[..., 0] != 0) | (h[..., 1] != 0)
    B = prefix[torch.where(nonzero, hi, lo)] - prefix[lo]
    h1, h2 = h[..., 0].double(), h[..., 1].double()
    return h1 * h1 * B[..., 0] + 2 * h1 * h2 * B[..., 1] + h2 * h2 * B[..., 2]


def readout_from_prefix(h: torch.Tensor, theta: torch.Tensor, prefix: torch.Tensor):
    """φ(h) = h·S(h) = h₁S₁ + h₂S₂ for rows h (…, R, 2), and the number of active columns per row. S is 0 for a
    row h = 0, so that ∂φ/∂h = 0 there, as the dense layer's ReLU'(0) = 0 gives."""
    S, active = arc_sums(h, theta, prefix)
    h64 = h.double()
    return (h64[..., 0] * S[..., 0] + h64[..., 1] * S[..., 1]).to(h.dtype), active  # not .sum(-1): slow over 2


def wide_readout(h: torch.Tensor, W: torch.Tensor, w_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """φ = Σ_c w_out[c]·ReLU(h·W[:, c]) for rows h (R, 2), and the number of active columns per row.

    ``W`` is W_{L−1} (2, n) and ``w_out`` the readout column W_L (n,). Equal to
    ``relu(h @ W) @ w_out`` (the dense layer) without forming the R×n matrix.
    """
    return readout_from_prefix(h, *prefix_sums(W, w_out))
