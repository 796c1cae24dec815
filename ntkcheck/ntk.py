"""The empirical NTK of Math-L2O: Jacobians of the residual map, Gram matrices, spectra.

The map under study (DESIGN.md §1, the proof's object) is

    W ↦ r(W) = vec(M X_T(W) − Y) ∈ R^{N·b},      training loss ½‖r‖² = F(X_T)  (summed over instances)

with rows ordered (instance i, row k): ``r.reshape(N, b)`` is ``problems.residual(problem, X_T)``.
W is the dict of the model's named parameters W1..WL (and b1..bL with biases).

Two Jacobians (both (N·b) × P, one block per parameter, row-major as ``param.reshape(-1)``):

    J  = ∂r/∂W                  the true Jacobian: the model with ``detach=False``
    J̃  = what detached BPTT computes: J̃ᵀv = ∇_W⟨v, r⟩ through the model with ``detach=True`` (the
         ``.detach()`` of the network inputs cuts the graph exactly as in training). Equivalently, J̃ is
         the Jacobian of the frozen-input surrogate ``model.unroll(problem, T, inputs=[Z_1..Z_T])``.

The forward values of the two modes are identical. At the deterministic initialisation (W_L = 0) every
path through the network inputs carries a factor W_L, so J = J̃ and the inner-layer blocks are exactly 0.

Two kernels (we SUM over parameters and never average over outputs; NT's trace_axes divide, we do not):

    K  = J Jᵀ    (true NTK, symmetric PSD),      K_ij = Σ_p J_ip J_jp
    K̃  = J J̃ᵀ    (training kernel). One SGD step W' = W − η J̃ᵀ r changes r by −η K̃ r to first order, so
                  the loss change −η rᵀK̃ r is governed by the symmetric part ½(K̃ + K̃ᵀ).

Per layer ℓ: K_ℓ = Σ_{p ∈ {W_ℓ, b_ℓ}} J_p J_pᵀ, so K = Σ_ℓ K_ℓ. Per instance: the b×b block (i, j).

Implementations (``method="auto"`` takes the structured one where it applies): ``method="func"`` is the reference, with torch.func (a vmap over instances of jacrev,
using that r_i depends only on instance i); ``method="structured"`` is the model-specific fast path of
:mod:`ntkcheck.structured` (same return convention). Matrix-free products v ↦ J(J̃ᵀv) are one VJP and
one JVP (:func:`ntk_operator`), for Lanczos (:func:`extreme_eigenvalues`) when K is not needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from ntkcheck.model import MathL2O, build
from ntkcheck.problems import Problem, residual

MODES = ("true", "detached")
METHODS = ("auto", "func", "structured")
KERNELS = ("true", "training")
OUTPUTS = ("residual", "X")


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))} (got {value!r})")


def _check_T(T) -> None:
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be an integer ≥ 1 (got {T!r})")


# -- the map W ↦ r(W) as a pure function of the parameters ---------------------------------------------


def with_mode(model: MathL2O, mode: str, *, dtype: torch.dtype | None = None) -> MathL2O:
    """A copy of ``model`` (same weights, architecture and wide-layer path) with ``detach`` set by ``mode``:
    ``"true"`` → detach=False (J), ``"detached"`` → detach=True (J̃). ``dtype`` converts the copy."""
    _choice("mode", mode, MODES)
    params = {k: v.detach() for k, v in model.named_parameters()}
    first = next(iter(params.values()))
    return build(model.widths, params, bias=model.bias, detach=mode == "detached", step_scale=model.step_scale,
                 wide_layer="angular" if model.angular else "dense", device=first.device,
                 dtype=dtype or first.dtype)


def parameters(model: MathL2O) -> dict[str, torch.Tensor]:
    """The model's named parameters W1..WL (b1..bL), detached, in registration order."""
    return {k: v.detach() for k, v in model.named_parameters()}


def _output(problem: Problem, X: torch.Tensor, output: str) -> torch.Tensor:
    """r = vec(M X_T − Y) (rows (i, k)) or vec(X_T) (rows (i, j))."""
    return (residual(problem, X) if output == "residual" else X).reshape(-1)


class _Unrolled(nn.Module):
    """r(W) of one unroll as a module's forward, so that ``functional_call`` can substitute W."""

    def __init__(self, model: MathL2O):
        super().__init__()
        self.model = model

    def forward(self, problem: Problem, T: int, output: str) -> torch.Tensor:
        return _output(problem, self.model.unroll(problem, T).X[-1], output)


def residual_fn(model: MathL2O, problem: Problem, T: int, *, mode: str = "true", output: str = "residual",
                dtype: torch.dtype | None = None) -> Callable[[dict], torch.Tensor]:
    """The pure function W ↦ r(W) (all N instances, shape (N·b,)) for torch.func, in ``mode``.

    ``W`` is a dict name → tensor; names not in it keep the model's value. ``output="X"`` gives vec(X_T)
    (shape (N·d,)) instead of r.
    """
    _check_T(T)
    _choice("output", output, OUTPUTS)
    net = _Unrolled(with_mode(model, mode, dtype=dtype))
    fixed = {f"model.{k}": v for k, v in parameters(net.model).items()}
    prob = problem if dtype is None else problem.to(dtype=dtype)

    def f(params: dict) -> torch.Tensor:
        return functional_call(net, {**fixed, **{f"model.{k}": v for k, v in params.items()}}, (prob, T, output))

    return f


# -- Jacobians ---------------------------------------------------------------------------------------------


def jacobian(model: MathL2O, problem: Problem, T: int, *, mode: str = "true", method: str = "auto",
             chunk: int | None = None, params: Sequence[str] | None = None,
             output: str = "residual") -> dict[str, torch.Tensor]:
    """J = ∂r/∂W (``mode="true"``) or J̃ (``mode="detached"``), one block per parameter.

    Returns ``{name: (N·b, numel(param))}``: row i·b + k is ∂r_{i,k}/∂vec(param), with vec = row-major
    ``param.reshape(-1)``; in the model's dtype. ``params`` restricts to some parameters (default all,
    in the model's order). ``output="X"`` differentiates vec(X_T) instead (N·d rows; func only).

    ``method="func"``: r_i depends on instance i alone, so ``vmap`` over instances of ``jacrev`` over the
    b rows of one instance; ``chunk`` = rows per vmapped VJP (``jacrev(chunk_size=…)``). Default: all b
    rows at once on the angular wide layer, 1 on the dense one (where vmapping over rows makes rows × d × n
    temporaries). Measured at N=32, 32×25, n=1024, T=20 (angular), busy 2-core machine: 1 thread, chunk 4
    ≈ 0.45 s and all rows ≈ 0.6–0.9 s; 2 threads, chunk 1 ≈ 37 s, chunk 5 ≈ 9 s, all rows ≈ 2.4–4 s. On a
    shared CPU ``torch.set_num_threads(1)`` helps most: the operations are tiny and OpenMP barriers dominate.
    ``method="structured"``: :func:`ntkcheck.structured.structured_jacobian`.
    ``method="auto"``: structured where it applies (angular wide layer, output r), func otherwise.
    """
    _check_T(T)
    _choice("mode", mode, MODES)
    _choice("method", method, METHODS)
    _choice("output", output, OUTPUTS)
    all_names = list(parameters(model))
    names = all_names if params is None else list(params)
    unknown = [n for n in names if n not in all_names]
    if unknown or not names:
        raise ValueError(f"params must be a non-empty subset of {', '.join(all_names)} (got {params!r})")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk must be None or an integer ≥ 1 (got {chunk!r})")
    if method == "auto":
        method = "structured" if model.angular and output == "residual" else "func"
    if method == "structured":
        return _structured(model, problem, T, mode, names, output)
    return _func_jacobian(model, problem, T, mode, names, output, chunk)


def _structured(model, problem, T, mode, names, output):
    if output != "residual":
        raise NotImplementedError("method='structured' computes the Jacobian of r only; use method='func' for X_T")
    try:
        from ntkcheck.structured import structured_jacobian
    except ModuleNotFoundError as err:
        if err.name not in ("ntkcheck.structured", None):
            raise
        raise NotImplementedError("method='structured' needs ntkcheck/structured.py, which is not available "
                                  "in this installation; use method='func'") from None
    J = structured_jacobian(with_mode(model, mode), problem, T, mode=mode)
    return {k: J[k] for k in names}


def _func_jacobian(model, problem, T, mode, names, output, chunk):
    net = _Unrolled(with_mode(model, mode))
    base = parameters(net.model)
    fixed = {f"model.{k}": v for k, v in base.items() if k not in names}
    wrt = {k: base[k] for k in names}
    data = [problem.M, problem.Y, problem.beta]
    gram = problem.H is not None
    if gram:
        data += [problem.H, problem.c]
    if chunk is None:
        chunk = None if net.model.angular else 1

    def one_instance(w, *arrays):  # arrays of one instance, without the leading axis
        M, Y, beta, *Hc = (a[None] for a in arrays)
        prob = Problem(M, Y, beta, None, *(Hc if gram else (None, None)))
        named = {**fixed, **{f"model.{k}": v for k, v in w.items()}}
        return functional_call(net, named, (prob, T, output))

    in_dims = (None,) + (0,) * len(data)
    jac = vmap(jacrev(one_instance, chunk_size=chunk), in_dims=in_dims)(wrt, *data)
    rows = problem.N * (problem.b if output == "residual" else problem.d)
    return {k: jac[k].reshape(rows, -1) for k in names}


# -- Gram matrices -----------------------------------------------------------------------------------------


def layer_of(name: str) -> int:
    """ℓ of a parameter named ``W<ℓ>`` or ``b<ℓ>``."""
    return int(name[1:])


@dataclass(frozen=True)
class Gram:
    """An empirical kernel K = Σ_p J_p J'_pᵀ and its per-parameter blocks.

    ``kind``: ``"true"`` (K = J Jᵀ) or ``"training"`` (K̃ = J J̃ᵀ, not symmetric in general).
    ``N`` instances of ``rows`` outputs each: entry (i·rows + k, j·rows + l) couples output k of instance i
    with output l of instance j.
    """

    K: torch.Tensor
    blocks: dict[str, torch.Tensor]
    N: int
    rows: int
    kind: str

    def layer(self, ell: int) -> torch.Tensor:
        """K_ℓ = Σ_{p ∈ {W_ℓ, b_ℓ}} J_p J'_pᵀ."""
        parts = [B for name, B in self.blocks.items() if layer_of(name) == ell]
        if not parts:
            raise ValueError(f"no parameter of layer {ell} (layers: {sorted(self.layers())})")
        return sum(parts[1:], parts[0])

    def layers(self) -> dict[int, torch.Tensor]:
        return {ell: self.layer(ell) for ell in sorted({layer_of(n) for n in self.blocks})}

    def layer_traces(self) -> dict[int, float]:
        """trace(K_ℓ) = Σ_p ⟨J_p, J'_p⟩_F; for K these sum to trace(K) = ‖J‖_F²."""
        return {ell: float(torch.trace(B)) for ell, B in self.layers().items()}

    def instance_block(self, i: int, j: int) -> torch.Tensor:
        """The rows×rows block coupling instance i (rows) with instance j (columns)."""
        r = self.rows
        return self.K[i * r:(i + 1) * r, j * r:(j + 1) * r]

    def instance_blocks(self) -> torch.Tensor:
        """All blocks as (N, N, rows, rows): ``[i, j]`` is :meth:`instance_block` (i, j)."""
        return self.K.reshape(self.N, self.rows, self.N, self.rows).permute(0, 2, 1, 3)

    def symmetric_part(self) -> torch.Tensor:
        """½(K + Kᵀ): the part that governs the first-order loss change −η rᵀK r."""
        return 0.5 * (self.K + self.K.T)


def gram(J: dict[str, torch.Tensor], Jt: dict[str, torch.Tensor] | None = None, *, N: int,
         kind: str | None = None) -> Gram:
    """K = Σ_p J_p J'_pᵀ with J' = ``Jt`` (default J). ``N`` instances split the rows evenly."""
    Jt = J if Jt is None else Jt
    if set(J) != set(Jt):
        raise ValueError(f"J and Jt must have the same parameters (got {sorted(J)} and {sorted(Jt)})")
    blocks = {k: J[k] @ Jt[k].T for k in J}
    values = list(blocks.values())
    K = sum(values[1:], values[0].clone())
    n = K.shape[0]
    if n % N:
        raise ValueError(f"{n} rows cannot be split into N = {N} instances")
    return Gram(K, blocks, N, n // N, kind or ("true" if Jt is J else "training"))


def ntk_gram(model: MathL2O, problem: Problem, T: int, *, kernel: str = "true", method: str = "auto",
             dtype: torch.dtype | None = torch.float64, chunk: int | None = None,
             params: Sequence[str] | None = None) -> Gram:
    """K = J Jᵀ (``kernel="true"``) or K̃ = J J̃ᵀ (``kernel="training"``), dense, in ``dtype`` (float64
    by default; None keeps the model's). Whole, per parameter/layer (:class:`Gram`), per instance block."""
    _choice("kernel", kernel, KERNELS)
    if dtype is not None:
        model, problem = with_mode(model, "true", dtype=dtype), problem.to(dtype=dtype)
    J = jacobian(model, problem, T, mode="true", method=method, chunk=chunk, params=params)
    if kernel == "true":
        return gram(J, N=problem.N, kind="true")
    Jt = jacobian(model, problem, T, mode="detached", method=method, chunk=chunk, params=params)
    return gram(J, Jt, N=problem.N, kind="training")


# -- matrix-free products ----------------------------------------------------------------------------------


def ntk_operator(model: MathL2O, problem: Problem, T: int, *, kernel: str = "true", part: str = "full",
                 dtype: torch.dtype = torch.float64) -> LinearOperator:
    """K or K̃ as a scipy LinearOperator on R^{N·b}, without forming J.

        K v  = J (Jᵀ v):   VJP of the true model, then JVP of the true model
        K̃ v  = J (J̃ᵀ v):   VJP of the detached model (= detached BPTT), then JVP of the true model
        K̃ᵀv  = J̃ (Jᵀ v):   VJP of the true model, then JVP of the detached model (``rmatvec``)

    ``part="symmetric"`` (training kernel only) gives ½(K̃ + K̃ᵀ), the operator for eigsh. Each product
    costs one forward with tangents per JVP; the VJP graphs are built once, at construction.
    """
    _choice("kernel", kernel, KERNELS)
    _choice("part", part, ("full", "symmetric"))
    _check_T(T)
    f_true = residual_fn(model, problem, T, mode="true", dtype=dtype)
    W = {k: v.to(dtype) for k, v in parameters(model).items()}
    r0, vjp_true = vjp(f_true, W)
    n = r0.numel()
    if kernel == "training":
        f_det = residual_fn(model, problem, T, mode="detached", dtype=dtype)
        _, vjp_det = vjp(f_det, W)

    def as_torch(v):
        return torch.as_tensor(np.asarray(v, dtype=np.float64).reshape(n), dtype=dtype, device=r0.device)

    def apply(f_out, vjp_in, v):
        return jvp(f_out, (W,), (vjp_in(as_torch(v))[0],))[1].detach().cpu().double().numpy()

    if kernel == "true":
        mv = rmv = lambda v: apply(f_true, vjp_true, v)  # noqa: E731
    else:
        def mv(v):
            return apply(f_true, vjp_det, v)

        def rmv(v):
            return apply(f_det, vjp_true, v)

        if part == "symmetric":
            mv = rmv = lambda v, a=mv, b=rmv: 0.5 * (a(v) + b(v))  # noqa: E731
    return LinearOperator((n, n), matvec=mv, rmatvec=rmv, dtype=np.float64)


# -- ranks and spectra -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rank:
    """Numerical rank with its tolerance (numpy's convention): rank = #{σ_i > tol},
    tol = max(shape)·eps·σ_max, eps the machine epsilon of the dtype the matrix was computed in.

    ``sigma_min`` is the smallest singular value as computed — reported even when it is below ``tol``
    (then it is zero to working precision, and that is what the numbers say)."""

    rank: int
    tol: float
    sigma_max: float
    sigma_min: float
    shape: tuple[int, int]
    eps: float

    @property
    def full(self) -> bool:
        return self.rank == min(self.shape)

    def as_dict(self) -> dict:
        return {"rank": self.rank, "tol": self.tol, "sigma_max": self.sigma_max, "sigma_min": self.sigma_min,
                "shape": list(self.shape), "eps": self.eps, "full_rank": self.full}


def numerical_rank(singular_values, shape: tuple[int, int], *, eps: float | None = None,
                   tol: float | None = None) -> Rank:
    """:class:`Rank` from the min(shape) singular values of a matrix of ``shape`` (absolute eigenvalues for a
    symmetric one). ``eps`` defaults to float64's; ``tol`` overrides max(shape)·eps·σ_max."""
    s = np.abs(np.asarray(singular_values, dtype=np.float64).ravel())
    if s.size != min(shape):
        raise ValueError(f"a {shape[0]}×{shape[1]} matrix has {min(shape)} singular values (got {s.size})")
    eps = float(np.finfo(np.float64).eps) if eps is None else float(eps)
    smax = float(s.max()) if s.size else 0.0
    tol = max(shape) * eps * smax if tol is None else float(tol)
    return Rank(int((s > tol).sum()), float(tol), smax, float(s.min()) if s.size else 0.0,
                (int(shape[0]), int(shape[1])), eps)


def matrix_rank(A) -> Rank:
    """:class:`Rank` of a dense matrix (torch or numpy) from its singular values, eps of its dtype."""
    A_t = torch.as_tensor(A)
    s = torch.linalg.svdvals(A_t).cpu().double().numpy()
    return numerical_rank(s, tuple(A_t.shape), eps=torch.finfo(A_t.dtype).eps)


@dataclass(frozen=True)
class KernelSpectrum:
    """All eigenvalues of a symmetric kernel (ascending), λ_max, λ_min, trace and the numerical rank.

    λ_min is reported as computed (it may be a tiny negative number for a singular PSD kernel); compare it
    with ``rank.tol``."""

    eigenvalues: np.ndarray
    rank: Rank
    trace: float

    @property
    def lambda_max(self) -> float:
        return float(self.eigenvalues[-1])

    @property
    def lambda_min(self) -> float:
        return float(self.eigenvalues[0])

    def as_dict(self) -> dict:
        return {"lambda_max": self.lambda_max, "lambda_min": self.lambda_min, "trace": self.trace,
                **{f"rank_{k}" if k != "rank" else "rank": v for k, v in self.rank.as_dict().items()}}


def kernel_spectrum(K) -> KernelSpectrum:
    """Dense eigen-decomposition (eigvalsh, float64) of a symmetric kernel, with its numerical rank."""
    K_t = torch.as_tensor(K)
    eps = torch.finfo(K_t.dtype).eps
    K64 = K_t.double()
    lam = torch.linalg.eigvalsh(0.5 * (K64 + K64.T)).cpu().numpy()
    return KernelSpectrum(lam, numerical_rank(lam, tuple(K_t.shape), eps=eps), float(torch.trace(K64)))


@dataclass(frozen=True)
class Extremes:
    """The k largest (descending) and k smallest (ascending) eigenvalues of a symmetric operator.

    ``method``: ``"lanczos"`` (scipy eigsh, ARPACK) or ``"dense"`` (eigvalsh of the materialised matrix).
    Lanczos determines each eigenvalue to about tol·λ_max in absolute terms, so a λ_min far below
    λ_max·1e-12 is "zero to working precision", not a measured value: compare with the rank tolerance."""

    largest: np.ndarray
    smallest: np.ndarray
    method: str
    n: int
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def lambda_max(self) -> float:
        return float(self.largest[0])

    @property
    def lambda_min(self) -> float:
        return float(self.smallest[0])


def _dense(A) -> np.ndarray:
    if isinstance(A, LinearOperator):
        return np.asarray(A @ np.eye(A.shape[0]))
    return torch.as_tensor(A).detach().cpu().double().numpy()


def extreme_eigenvalues(A, k: int = 1, *, method: str = "auto", tol: float = 1e-12, maxiter: int | None = None,
                        dense_max: int = 2000, seed: int = 0) -> Extremes:
    """λ_max, λ_min (and the k largest/smallest) of a symmetric matrix or LinearOperator ``A``.

    ``method="lanczos"`` (scipy eigsh, from a seeded start vector):
        top:     eigsh(A, which="LA")                       relative accuracy ``tol``
        bottom:  λ_i(A) = σ − μ_i with μ_i = eigsh(σI − A, which="LA"), σ = λ_max(A)
    The shift makes the bottom of a (nearly) singular PSD kernel converge: ARPACK stops when a Ritz
    residual is ≤ tol·|Ritz value|, which a cluster of eigenvalues at 0 never satisfies, whereas for σI − A
    the Ritz values are ≈ λ_max. So λ_min comes out to an absolute accuracy of about tol·λ_max (``extra``
    records it as ``abs_accuracy_min``): a λ_min below that is zero to this precision, and is reported as
    computed, sign included.
    ``method="dense"``: eigvalsh (a LinearOperator is materialised column by column).
    ``method="auto"``: dense for a matrix (not an operator) of size ≤ ``dense_max``, Lanczos otherwise.
    If Lanczos does not converge, the dense fallback is used when n ≤ ``dense_max`` (``note`` says so),
    else a RuntimeError names the options to change.
    """
    _choice("method", method, ("auto", "lanczos", "dense"))
    n = A.shape[0]
    if A.shape != (n, n):
        raise ValueError(f"A must be square (got shape {A.shape})")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in [1, n = {n}] (got {k!r})")
    use_dense = method == "dense" or (method == "auto" and (not isinstance(A, LinearOperator) and n <= dense_max))
    use_dense = use_dense or k >= n - 1  # ARPACK needs k < n − 1 for a symmetric problem
    if use_dense:
        return _dense_extremes(A, k, n)
    op = A if isinstance(A, LinearOperator) else _as_operator(A)
    v0 = np.random.default_rng(seed).standard_normal(n)
    try:
        top = np.sort(eigsh(op, k=k, which="LA", tol=tol, maxiter=maxiter, v0=v0, return_eigenvectors=False))[::-1]
        sigma = float(top[0])
        shifted = LinearOperator((n, n), matvec=lambda v: sigma * np.ravel(v) - np.ravel(op @ np.ravel(v)),
                                 dtype=np.float64)
        mu = eigsh(shifted, k=k, which="LA", tol=tol, maxiter=maxiter, v0=v0, return_eigenvectors=False)
    except ArpackNoConvergence as err:
        if n > dense_max:
            raise RuntimeError(f"Lanczos did not converge for n = {n} ({err}); raise maxiter, loosen tol, or "
                               f"raise dense_max to ≥ {n} to allow the dense fallback") from None
        return _dense_extremes(A, k, n, note=f"Lanczos did not converge ({err}); dense fallback")
    smallest = np.sort(sigma - mu)
    accuracy = max(tol, float(np.finfo(np.float64).eps)) * abs(sigma)
    return Extremes(top.copy(), smallest, "lanczos", n, extra={"abs_accuracy_min": accuracy, "tol": tol})


def _dense_extremes(A, k: int, n: int, note: str = "") -> Extremes:
    lam = np.linalg.eigvalsh(_symmetrize(_dense(A)))
    return Extremes(lam[::-1][:k].copy(), lam[:k].copy(), "dense", n, note=note)


def _symmetrize(A: np.ndarray) -> np.ndarray:
    return 0.5 * (A + A.T)


def _as_operator(A) -> LinearOperator:
    M = _dense(A)
    return LinearOperator(M.shape, matvec=lambda v: M @ v, rmatvec=lambda v: M.T @ v, dtype=np.float64)
