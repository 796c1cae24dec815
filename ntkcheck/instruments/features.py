"""Layer features G_{ℓ,t}, α = σ_min(G_{L−1,t}), and the singular values of the weight matrices. float64.

At step t the network sees the rows z_t = (∇F(X_{t−1}), X_{t−1}) of every coordinate of every instance, and

    G_{0,t} = Z_t ∈ R^{N·d × 2},      G_{ℓ,t} = ReLU(G_{ℓ−1,t} W_ℓ + b_ℓ) ∈ R^{N·d × n_ℓ}      (ℓ = 1..L−1)

with rows ordered (instance i, coordinate j) → row i·d + j. The proof's α₀ is

    α₀ = σ_min(G_{L−1,T}) at the initial weights W⁰,

the smallest of the min(N·d, n) singular values (for the paper's width n = N·d, the square case). Every
quantity is reported with σ_max, the numerical rank and its tolerance max(shape)·eps·σ_max (numpy's
convention, eps of float64), and the step and rows that built the matrix; σ_min is reported as computed,
also when it is below the tolerance (for this architecture it is 0 to machine precision: docs/ARCHITECTURE.md, facts).
Beside it, σ_min⁺ = the smallest singular value above the tolerance (the bottom of G's numerical range), and the
features' drift along training ‖G_k − G_0‖_F/‖G_0‖_F (:func:`features_drift`, G at W_k against G at W_0).

The singular values come from the activation patterns of the layer where that is cheaper (:func:`pattern_factor`):
rows that switch on the same columns see a linear map of rank ≤ fan-in, so G_{ℓ,t} = Q·C with C small, and the
singular values beyond C's are exactly zero (bounds/DERIVATIONS.md §3b).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ntkcheck.instruments.linalg import Rank, numerical_rank, singular_spectrum
from ntkcheck.instruments.ntk import with_mode
from ntkcheck.models.math_l2o import MathL2O
from ntkcheck.problems.qp import Problem

ROWS = "(instance i, coordinate j) at row i·d + j, 0 ≤ i < N, 0 ≤ j < d"


def _float64(model: MathL2O, problem: Problem) -> tuple[MathL2O, Problem]:
    return with_mode(model, "detached" if model.detach else "true", dtype=torch.float64), problem.to(dtype=torch.float64)


def _layer(model: MathL2O, layer: int | None) -> int:
    ell = model.L - 1 if layer is None else layer
    if isinstance(ell, bool) or not isinstance(ell, int) or not 1 <= ell <= model.L - 1:
        raise ValueError(f"layer must be an integer in [1, L−1 = {model.L - 1}] (got {layer!r})")
    return ell


def _step(t, T: int | None = None) -> int:
    if isinstance(t, bool) or not isinstance(t, int) or t < 1 or (T is not None and t > T):
        bound = f"[1, T = {T}]" if T is not None else "≥ 1"
        raise ValueError(f"t must be an integer in {bound} (got {t!r})")
    return t


def row_labels(N: int, d: int) -> np.ndarray:
    """(instance, coordinate) of every row of G_{ℓ,t}: array (N·d, 2), row i·d + j ↦ (i, j)."""
    i, j = np.divmod(np.arange(N * d), d)
    return np.stack((i, j), axis=1)


def features(model: MathL2O, problem: Problem, t: int, *, layer: int | None = None) -> torch.Tensor:
    """G_{ℓ,t} (default ℓ = L−1), float64, rows (i, j) → i·d + j; via ``model.features_at``."""
    ell = _layer(model, layer)
    m, p = _float64(model, problem)
    return m.features_at(p, _step(t))[ell - 1]


@dataclass(frozen=True)
class FeatureSpectrum:
    """Singular values of G_{ℓ,t} and what built it.

    ``alpha`` = σ_min = the smallest of the min(rows, cols) singular values; ``rank`` with its tolerance.
    """

    layer: int
    t: int
    N: int
    d: int
    singular_values: np.ndarray  # descending
    rank: Rank
    rows: str = ROWS
    patterns: int | None = None  # distinct activation patterns among the non-zero rows, when they were used
    rank_bound: int | None = None  # rank G ≤ rank_bound from those patterns: the singular values past it are 0

    @property
    def alpha(self) -> float:
        return self.rank.sigma_min

    @property
    def sigma_max(self) -> float:
        return self.rank.sigma_max

    @property
    def shape(self) -> tuple[int, int]:
        return self.rank.shape

    @property
    def sigma_min_nonzero(self) -> float:
        """σ_min⁺ = min{σ_i : σ_i > tol}, the smallest singular value above the rank's tolerance (NaN at rank 0)."""
        s = np.asarray(self.singular_values, dtype=np.float64)
        above = s[s > self.rank.tol]
        return float(above.min()) if above.size else float("nan")

    def as_dict(self) -> dict:
        """Plain numbers for JSON / tables (the singular values themselves are not included)."""
        return {"layer": self.layer, "t": self.t, "alpha": self.alpha, "sigma_min": self.alpha,
                "sigma_max": self.sigma_max, "sigma_min_nonzero": self.sigma_min_nonzero, "rank": self.rank.rank,
                "tol": self.rank.tol,
                "full_rank": self.rank.full, "n_rows": self.shape[0], "n_cols": self.shape[1],
                "N": self.N, "d": self.d, "rows": self.rows, "patterns": self.patterns, "rank_bound": self.rank_bound}

    @classmethod
    def from_dict(cls, d: dict, singular_values) -> "FeatureSpectrum":
        """The inverse of :meth:`as_dict` given the singular values (a probe read back from its files)."""
        rank = Rank(d["rank"], d["tol"], d["sigma_max"], d["sigma_min"], (d["n_rows"], d["n_cols"]),
                    float(np.finfo(np.float64).eps))
        return cls(d["layer"], d["t"], d["N"], d["d"], np.asarray(singular_values), rank, d["rows"],
                   d.get("patterns"), d.get("rank_bound"))


def pattern_factor(G_in: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, G: torch.Tensor
                   ) -> tuple[np.ndarray, int] | None:
    """C (float64 numpy) with G = Q·C, Q with orthonormal columns, for a ReLU layer G = ReLU(G_in W + b) (R × n),
    and the number of activation patterns.

    Rows j that switch on the same set of columns m (G[j, c] > 0 exactly for c ∈ m) form one block, on which the
    layer is linear: with A = [G_in 1] (the 1 only with a bias), V = [W; b] and the block's thin QR A_k = Q_k R_k,

        G_k = A_k V diag(m_k) = Q_k (R_k V diag(m_k)),      C = stack over k of R_k V diag(m_k).

    The Q_k live on disjoint rows, so Q = blockdiag(Q_k) has orthonormal columns and G has C's singular values
    plus min(R, n) − rows(C) exact zeros: rank G ≤ rows(C) = Σ_k min(r_k, p), with r_k the block's rows and
    p = fan-in (+1 with a bias). Rows with no active column are zero and drop out. C agrees with G to rounding.
    None where rows(C) would not be below min(R, n) (then C saves nothing and proves no zero)."""
    active = (G > 0).cpu().numpy()
    A = G_in.detach().double().cpu().numpy()
    V = W.detach().double().cpu().numpy()
    if b is not None:
        A = np.hstack((A, np.ones((A.shape[0], 1))))
        V = np.vstack((V, b.detach().double().cpu().numpy()[None]))
    live = np.flatnonzero(active.any(axis=1))
    _, block = np.unique(np.packbits(active[live], axis=1), axis=0, return_inverse=True)
    block = block.ravel()
    blocks = np.split(live[np.argsort(block, kind="stable")], np.cumsum(np.bincount(block))[:-1]) if live.size else []
    if sum(min(len(rows), A.shape[1]) for rows in blocks) >= min(G.shape):
        return None
    with np.errstate(over="ignore", invalid="ignore"):  # overflowed weights: C is not finite, the caller goes dense
        C = [np.linalg.qr(A[rows], mode="r") @ (V * active[rows[0]]) for rows in blocks]
    return (np.vstack(C) if C else np.zeros((0, G.shape[1]))), len(blocks)


def spectrum_of(G: torch.Tensor, *, layer: int, t: int, N: int, d: int, G_in: torch.Tensor | None = None,
                W: torch.Tensor | None = None, b: torch.Tensor | None = None) -> FeatureSpectrum:
    """The singular values of G with its rank. Given the layer's input ``G_in`` and weights ``W``, ``b``
    (G = ReLU(G_in W + b)), from :func:`pattern_factor` whenever its C has fewer rows than min(R, n): the SVD of
    C, then exact zeros (for the paper's 5120×5120 G, a few hundred rows instead of 5120); else, or where C overflows,
    the SVD of G."""
    factor = None if G_in is None else pattern_factor(G_in, W, b, G)
    if factor is not None and np.isfinite(factor[0]).all():
        C, patterns = factor
        s = np.zeros(min(G.shape))
        s[:C.shape[0]] = torch.linalg.svdvals(torch.from_numpy(C)).numpy() if C.size else 0.0
        return FeatureSpectrum(layer, t, N, d, s, numerical_rank(s, tuple(G.shape)), ROWS, patterns, C.shape[0])
    s, rank = singular_spectrum(G)
    return FeatureSpectrum(layer, t, N, d, s, rank)


def layer_spectrum(model: MathL2O, Z: torch.Tensor, *, t: int, N: int, d: int, layer: int | None = None) -> FeatureSpectrum:
    """:func:`spectrum_of` G_{ℓ,t} (default ℓ = L−1) for the input rows Z of step t, through its activation patterns."""
    ell = _layer(model, layer)
    Gs = [Z, *model.features(Z, upto=ell)]
    W, b = model.layer(ell)
    return spectrum_of(Gs[ell], layer=ell, t=t, N=N, d=d, G_in=Gs[ell - 1], W=W, b=b)


def alpha(model: MathL2O, problem: Problem, T: int, *, t: int | None = None,
          layer: int | None = None) -> FeatureSpectrum:
    """α = σ_min(G_{ℓ,t}) with σ_max, rank, tolerance; default ℓ = L−1 and t = T (the proof's α₀ when
    ``model`` holds the initial weights)."""
    _step(T)
    t = T if t is None else _step(t, T)
    ell = _layer(model, layer)
    m, p = _float64(model, problem)
    with torch.no_grad():
        Y = m.unroll(p, t - 1).Y[-1]  # where step t reads its inputs (X_{t−1} itself for gd and prox)
        return layer_spectrum(m, m.inputs(p, Y), t=t, N=p.N, d=p.d, layer=ell)


def alpha_features(model: MathL2O, problem: Problem, T: int) -> torch.Tensor:
    """G_{L−1,T} (float64, N·d × n) as α's probe builds it: the wide layer's features of the inputs
    z_T = (∇F(Y_{T−1}), Y_{T−1}) along the model's own trajectory (Y = X for gd and prox; the extrapolated point of
    nag and fista, where the network reads its inputs)."""
    _step(T)
    m, p = _float64(model, problem)
    with torch.no_grad():
        return m.features(m.inputs(p, m.unroll(p, T - 1).Y[-1]))[-1]


def features_drift(G0, G) -> float:
    """‖G − G_0‖_F/‖G_0‖_F, the relative change of the features from G_0 (at W_0) to G (at W_k), in float64;
    NaN where ‖G_0‖_F = 0 (no features to compare against)."""
    G0, G = (torch.as_tensor(x, dtype=torch.float64) for x in (G0, G))
    if G0.shape != G.shape:
        raise ValueError(f"G_0 and G must have the same shape (got {tuple(G0.shape)} and {tuple(G.shape)})")
    norm0 = float(torch.linalg.norm(G0))
    return float(torch.linalg.norm(G - G0)) / norm0 if norm0 > 0 else float("nan")


def alpha_table(model: MathL2O, problem: Problem, T: int, *, layer: int | None = None) -> pd.DataFrame:
    """One row per step t = 1..T: σ_min, σ_max, rank, tol, shape of G_{ℓ,t} (one unroll, T SVDs)."""
    _step(T)
    ell = _layer(model, layer)
    m, p = _float64(model, problem)
    with torch.no_grad():
        Y = m.unroll(p, T - 1).Y  # Y_0..Y_{T−1}: where steps 1..T read their inputs (the X_t for gd and prox)
        rows = [layer_spectrum(m, m.inputs(p, Y[t - 1]), t=t, N=p.N, d=p.d, layer=ell).as_dict()
                for t in range(1, T + 1)]
    return pd.DataFrame(rows)


def weight_spectra(model: MathL2O) -> pd.DataFrame:
    """σ_min and ‖W_ℓ‖₂ = σ_max of every weight matrix (float64), with the rank and its tolerance.

    σ_min is the smallest of the min(in, out) singular values; W_L (n×1) has one, ‖W_L‖₂ = ‖W_L‖_F."""
    rows = []
    for name, W in model.named_parameters():
        if not name.startswith("W"):
            continue
        s, rank = singular_spectrum(W.detach())
        rows.append({"name": name, "layer": int(name[1:]), "shape": tuple(W.shape), "sigma_min": rank.sigma_min,
                     "sigma_max": rank.sigma_max, "rank": rank.rank, "tol": rank.tol})
    return pd.DataFrame(rows)
