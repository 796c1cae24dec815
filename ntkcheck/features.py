"""Layer features G_{ℓ,t}, α = σ_min(G_{L−1,t}), and the singular values of the weight matrices. float64.

At step t the network sees the rows z_t = (∇F(X_{t−1}), X_{t−1}) of every coordinate of every instance, and

    G_{0,t} = Z_t ∈ R^{N·d × 2},      G_{ℓ,t} = ReLU(G_{ℓ−1,t} W_ℓ + b_ℓ) ∈ R^{N·d × n_ℓ}      (ℓ = 1..L−1)

with rows ordered (instance i, coordinate j) → row i·d + j. The proof's α₀ is

    α₀ = σ_min(G_{L−1,T}) at the initial weights W⁰,

the smallest of the min(N·d, n) singular values (for the paper's width n = N·d, the square case). Every
quantity is reported with σ_max, the numerical rank and its tolerance max(shape)·eps·σ_max (numpy's
convention, eps of float64), and the step and rows that built the matrix; σ_min is reported as computed,
also when it is below the tolerance (for this architecture it is 0 to machine precision: docs/ARCHITECTURE.md, facts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ntkcheck.model import MathL2O
from ntkcheck.linalg import Rank, singular_spectrum
from ntkcheck.ntk import with_mode
from ntkcheck.problems import Problem

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

    @property
    def alpha(self) -> float:
        return self.rank.sigma_min

    @property
    def sigma_max(self) -> float:
        return self.rank.sigma_max

    @property
    def shape(self) -> tuple[int, int]:
        return self.rank.shape

    def as_dict(self) -> dict:
        """Plain numbers for JSON / tables (the singular values themselves are not included)."""
        return {"layer": self.layer, "t": self.t, "alpha": self.alpha, "sigma_min": self.alpha,
                "sigma_max": self.sigma_max, "rank": self.rank.rank, "tol": self.rank.tol,
                "full_rank": self.rank.full, "n_rows": self.shape[0], "n_cols": self.shape[1],
                "N": self.N, "d": self.d, "rows": self.rows}

    @classmethod
    def from_dict(cls, d: dict, singular_values) -> "FeatureSpectrum":
        """The inverse of :meth:`as_dict` given the singular values (a probe read back from its files)."""
        rank = Rank(d["rank"], d["tol"], d["sigma_max"], d["sigma_min"], (d["n_rows"], d["n_cols"]),
                    float(np.finfo(np.float64).eps))
        return cls(d["layer"], d["t"], d["N"], d["d"], np.asarray(singular_values), rank, d["rows"])


def spectrum_of(G: torch.Tensor, *, layer: int, t: int, N: int, d: int) -> FeatureSpectrum:
    s, rank = singular_spectrum(G)
    return FeatureSpectrum(layer, t, N, d, s, rank)


def alpha(model: MathL2O, problem: Problem, T: int, *, t: int | None = None,
          layer: int | None = None) -> FeatureSpectrum:
    """α = σ_min(G_{ℓ,t}) with σ_max, rank, tolerance; default ℓ = L−1 and t = T (the proof's α₀ when
    ``model`` holds the initial weights)."""
    _step(T)
    t = T if t is None else _step(t, T)
    ell = _layer(model, layer)
    return spectrum_of(features(model, problem, t, layer=ell), layer=ell, t=t, N=problem.N, d=problem.d)


def alpha_table(model: MathL2O, problem: Problem, T: int, *, layer: int | None = None) -> pd.DataFrame:
    """One row per step t = 1..T: σ_min, σ_max, rank, tol, shape of G_{ℓ,t} (one unroll, T SVDs)."""
    _step(T)
    ell = _layer(model, layer)
    m, p = _float64(model, problem)
    with torch.no_grad():
        X = m.unroll(p, T - 1).X  # X_0..X_{T−1}: the inputs of steps 1..T
        rows = [spectrum_of(m.features(m.inputs(p, X[t - 1]))[ell - 1], layer=ell, t=t, N=p.N, d=p.d).as_dict()
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
