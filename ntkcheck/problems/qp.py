"""The paper's QP family (docs/ARCHITECTURE.md §1): N least-squares instances, stacked.

    F(X) = Σ_i ½‖M_i x_i − y_i‖²,        ∇F(X)_i = M_iᵀ(M_i x_i − y_i),      β_i = ‖M_i‖₂²

M_i is b×d with i.i.d. N(0, 1) entries and every column scaled to unit ℓ2 norm; x*_i ~ N(0, I_d) and
y_i = M_i x*_i, so the system is consistent and F* = 0. X_0 = 0. X has shape (N, d), Y shape (N, b).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ntkcheck.config import ConfigError
from ntkcheck.results.io import read_arrays

SPLITS = {"train": 0, "test": 1}


@dataclass(frozen=True)
class Problem:
    """N instances (M_i, y_i) with their smoothness constants β_i = ‖M_i‖₂².

    ``H``, ``c``: the per-instance Gram matrix M_iᵀM_i (N, d, d) and M_iᵀy_i (N, d), kept when d < 2b,
    where one product with H costs less than the two with M and Mᵀ that ∇F needs otherwise.
    """

    M: torch.Tensor  # (N, b, d)
    Y: torch.Tensor  # (N, b)
    beta: torch.Tensor  # (N,)
    x_star: torch.Tensor | None = None  # (N, d), the generating solution when known
    H: torch.Tensor | None = None
    c: torch.Tensor | None = None

    @property
    def N(self) -> int:
        return self.M.shape[-3]

    @property
    def b(self) -> int:
        return self.M.shape[-2]

    @property
    def d(self) -> int:
        return self.M.shape[-1]

    def to(self, device=None, dtype=None) -> "Problem":
        """The problem on ``device`` in ``dtype``. A dtype in which β_i, H, c or F(X_0) = ½‖y_i‖² overflow is a
        ConfigError on ``dtype`` (the run would diverge at once, for no reason of its own). A device change alone
        reads no values; on ``meta`` (shapes only, no values) nothing is checked."""
        move = lambda t: None if t is None else t.to(device=device, dtype=dtype)  # noqa: E731
        moved = Problem(*(move(t) for t in (self.M, self.Y, self.beta, self.x_star, self.H, self.c)))
        if dtype is not None and dtype != self.M.dtype and moved.M.is_floating_point() and not moved.M.is_meta:
            parts = [moved.M, moved.beta, 0.5 * moved.Y.square().sum(-1)]
            parts += [t for t in (moved.H, moved.c) if t is not None]
            if not all(bool(torch.isfinite(t).all()) for t in parts):
                name, F0 = str(dtype).removeprefix("torch."), 0.5 * self.Y.double().square().sum(-1)
                raise ConfigError("dtype", f"the problem's numbers overflow {name} (β_i up to "
                                           f"{float(self.beta.max()):.3g}, ½‖y_i‖² up to {float(F0.max()):.3g}, "
                                           f"{name} reaches {torch.finfo(dtype).max:.3g}); use float64 or rescale M "
                                           "and Y")
        return moved

    def X0(self) -> torch.Tensor:
        """The initial iterate X_0 = 0."""
        return self.M.new_zeros(self.N, self.d)

    # -- the Problem protocol of :mod:`ntkcheck.problems.base` (r = 0: the objective is smooth) -------------

    def objective_per_instance(self, X: torch.Tensor) -> torch.Tensor:
        """f_i(x_i) = ½‖M_i x_i − y_i‖² (:func:`objective_per_instance`)."""
        return objective_per_instance(self, X)

    def objective_path(self, Xs) -> torch.Tensor:
        """F(X_1), …, F(X_T) at once (:func:`objective_path`), the fast path :mod:`ntkcheck.problems.meta` takes."""
        return objective_path(self, Xs)

    def gradient(self, X: torch.Tensor) -> torch.Tensor:
        """∇f_i(x_i) = M_iᵀ(M_i x_i − y_i) (:func:`gradient`)."""
        return gradient(self, X)

    def residual(self, X: torch.Tensor) -> torch.Tensor:
        """r_i = M_i x_i − y_i (:func:`residual`): F = ½‖r‖², and K = J Jᵀ with J = ∂vec(r)/∂W."""
        return residual(self, X)

    def prox(self, V: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """The least-squares objective has no nonsmooth part: prox_{a·0} is the identity."""
        return V

    def select(self, index) -> "Problem":
        """The cells ``index`` of a problem stacked per cell (every tensor (C, N, …)); ``index`` as for
        ``Tensor.__getitem__`` on the leading axis."""
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return Problem(*(pick(t) for t in (self.M, self.Y, self.beta, self.x_star, self.H, self.c)))


def _rows_times(X: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """x_iᵀA_i for every instance: (…, N, k) × (…, N, k, m) → (…, N, m).

    Written as a batch of row vectors times matrices, which BLAS runs several times faster than the
    equivalent matrix-times-column products on CPU (measured: 0.12 ms against 1.5 ms at 10×512×512).
    Cells sharing one problem (X of shape (C, N, k), A of shape (N, k, m)) take one matrix product per
    instance, (N, C, k) × (N, k, m), instead of C row-vector products.
    """
    if X.ndim == A.ndim:
        return (X.movedim(-2, 0) @ A).movedim(0, -2)
    return (X[..., None, :] @ A)[..., 0, :]


def residual(problem: Problem, X: torch.Tensor) -> torch.Tensor:
    """r(X) = M X − Y, per instance: r_i = M_i x_i − y_i, shape (…, N, b).

    X may carry a leading cell axis (C, N, d), on one shared problem or on a problem per cell (M (C, N, b, d))."""
    return _rows_times(X, problem.M.mT) - problem.Y


def objective_per_instance(problem: Problem, X: torch.Tensor) -> torch.Tensor:
    """f_i(x_i) = ½‖M_i x_i − y_i‖², shape (N,)."""
    return 0.5 * residual(problem, X).square().sum(-1)


def objective(problem: Problem, X: torch.Tensor) -> torch.Tensor:
    """F(X) = Σ_i ½‖M_i x_i − y_i‖² (a sum over instances, as in the paper; one per cell for X (C, N, d))."""
    return objective_per_instance(problem, X).sum(-1)


def objective_path(problem: Problem, Xs) -> torch.Tensor:
    """F(X_1), …, F(X_T) of a sequence of iterates, shape (…, T); equal to :func:`objective` of each.

    One matrix product per instance over all t (M_i read once, not T times): the iterates are stacked into
    rows, (N, [C·]T, d) × (N, d, b), with a cell axis folded into the rows when the cells share their problem.
    """
    X = torch.stack(list(Xs), dim=-2)  # (…, N, T, d)
    if X.ndim == problem.M.ndim + 1:  # cells (C, N, T, d) sharing one problem (N, b, d)
        C, N, T, d = X.shape
        R = X.movedim(0, 1).reshape(N, C * T, d) @ problem.M.mT - problem.Y[:, None, :]
        return 0.5 * R.square().sum(-1).reshape(N, C, T).sum(0)
    R = X @ problem.M.mT - problem.Y[..., None, :]  # (…, N, T, b)
    return 0.5 * R.square().sum(-1).sum(-2)


def gradient(problem: Problem, X: torch.Tensor) -> torch.Tensor:
    """∇F(X)_i = M_iᵀ(M_i x_i − y_i) = H_i x_i − c_i, shape (N, d)."""
    if problem.H is not None:
        return _rows_times(X, problem.H) - problem.c  # H_i is symmetric: x_iᵀH_i = (H_i x_i)ᵀ
    return _rows_times(residual(problem, X), problem.M)


def smoothness(M: torch.Tensor) -> torch.Tensor:
    """β_i = ‖M_i‖₂² = λ_max(M_i M_iᵀ) (the b×b side, b ≤ d), in float64, returned in M's dtype.

    A ValueError when it overflows float64 or M's dtype."""
    M64 = M.double()
    gram = M64 @ M64.mT
    if not bool(torch.isfinite(gram).all()):
        raise ValueError(f"M is too large: β_i = ‖M_i‖₂² overflows float64 (largest |entry| "
                         f"{float(M64.abs().max()):.3g}); rescale M and Y")
    beta = torch.linalg.eigvalsh(gram)[..., -1]
    if M.is_floating_point() and float(beta.max()) > torch.finfo(M.dtype).max:
        raise ValueError(f"M is too large: β_i = ‖M_i‖₂² = {float(beta.max()):.3g} overflows "
                         f"{str(M.dtype)[6:]}; use float64 or rescale M and Y")
    return beta.to(M.dtype)


def _numbers(name: str, value) -> torch.Tensor:
    """``value`` as a real tensor; a ValueError naming ``name`` for anything else (complex values would lose their
    imaginary part)."""
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be an array of numbers (got {type(value).__name__})") from None
    if t.is_complex():
        raise ValueError(f"{name} must be real (got {str(t.dtype)[6:]} values; their imaginary part would be lost)")
    if not (t.is_floating_point() or t.dtype in (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32,
                                                  torch.int64)):
        raise ValueError(f"{name} must be an array of numbers (got {str(t.dtype)[6:]})")
    return t


def from_tensors(M, Y, x_star=None) -> Problem:
    """A Problem from user-given M (N, b, d) and Y (N, b); β_i is computed from M.

    Accepts torch tensors or numpy arrays. A single instance (M of shape (b, d), Y of shape (b,)) is
    promoted to N = 1.
    """
    M, Y = _numbers("M", M), _numbers("Y", Y)
    x_star = None if x_star is None else _numbers("x_star", x_star)
    if M.ndim == 2:
        M, Y = M[None], Y[None]
        x_star = None if x_star is None else x_star[None]
    if M.ndim != 3:
        raise ValueError(f"M must have shape (N, b, d) or (b, d) (got {tuple(M.shape)})")
    N, b, d = M.shape
    if min(N, b, d) < 1:
        raise ValueError(f"M must have at least one instance, one row and one column (got shape {tuple(M.shape)})")
    if tuple(Y.shape) != (N, b):
        raise ValueError(f"Y must have shape (N, b) = ({N}, {b}) to match M (got {tuple(Y.shape)})")
    if x_star is not None and tuple(x_star.shape) != (N, d):
        raise ValueError(f"x_star must have shape (N, d) = ({N}, {d}) (got {tuple(x_star.shape)})")
    if not (torch.isfinite(M).all() and torch.isfinite(Y).all()):
        raise ValueError("M and Y must be finite")
    dtype = M.dtype if M.dtype in (torch.float32, torch.float64) else torch.float64
    M, Y = M.to(dtype), Y.to(dtype)
    beta = smoothness(M)
    if not (beta > 0).all():
        raise ValueError("every M_i must be non-zero (β_i = ‖M_i‖₂² > 0)")
    F0 = 0.5 * Y.double().square().sum(-1)
    if float(F0.max()) > torch.finfo(dtype).max:
        raise ValueError(f"Y is too large: F(X_0) = ½‖y_i‖² overflows {str(dtype)[6:]} (largest |entry| "
                         f"{float(Y.double().abs().max()):.3g}); rescale M and Y")
    H = c = None
    if d < 2 * b:
        M64 = M.double()
        H = M64.mT @ M64
        H, c = (0.5 * (H + H.mT)).to(dtype), torch.einsum("nbd,nb->nd", M64, Y.double()).to(dtype)
    return Problem(M, Y, beta, None if x_star is None else x_star.to(dtype), H, c)


def generate(N: int, d: int, b: int, seed: int, split: str = "train") -> Problem:
    """Draw the paper's QP family in float64, reproducibly.

    The train and test sets of one seed come from independent streams
    (``numpy.random.SeedSequence([seed, split])``), so they never share instances by construction.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)} (got {split!r})")
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split]]))
    M = rng.standard_normal((N, b, d))
    M /= np.linalg.norm(M, axis=1, keepdims=True)  # unit-norm columns
    x_star = rng.standard_normal((N, d))
    Y = np.einsum("nbd,nd->nb", M, x_star)
    return from_tensors(torch.from_numpy(M), torch.from_numpy(Y), torch.from_numpy(x_star))


def load(path: str | Path) -> Problem:
    """Read M, Y (and optionally x_star) from a ``.npz`` or a ``.pt`` file (a dict of arrays)."""
    arrays = read_arrays(path)
    missing = {"M", "Y"} - set(arrays)
    if missing:
        raise ValueError(f"{path} must contain arrays named M and Y (missing: {', '.join(sorted(missing))})")
    M = arrays["M"]
    if M.ndim in (2, 3) and M.shape[-2] > M.shape[-1]:
        b, d = M.shape[-2:]
        raise ValueError(f"{path}: the file's M has b = {b} rows > d = {d} columns per instance; Math-L2O needs "
                         "b ≤ d (M_i of full row rank)")
    try:
        return from_tensors(M, arrays["Y"], arrays.get("x_star"))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def save(problem: Problem, path: str | Path) -> None:
    """Write a problem as ``.npz`` (M, Y, x_star) so that :func:`load` reads it back exactly."""
    arrays = {"M": problem.M.cpu().numpy(), "Y": problem.Y.cpu().numpy()}
    if problem.x_star is not None:
        arrays["x_star"] = problem.x_star.cpu().numpy()
    np.savez(path, **arrays)


def gd_trajectory(problem: Problem, T: int, step_scale: float = 1.0) -> list[torch.Tensor]:
    """Plain GD with step ``step_scale``/β_i from X_0 = 0: X_t = X_{t−1} − (s/β_i)∇F(X_{t−1})."""
    X = problem.X0()
    path = [X]
    for _ in range(T):
        X = X - (step_scale / problem.beta)[..., None] * gradient(problem, X)
        path.append(X)
    return path
