"""The empirical NTK of Math-L2O: Jacobians of the residual map, Gram matrices, spectra.

The map under study (the proof's object; symbols in docs/ARCHITECTURE.md) is

    W ↦ r(W) = vec(M X_T(W) − Y) ∈ R^{N·b},      training loss ½‖r‖² = F(X_T)  (summed over instances)

with rows ordered (instance i, row k): ``r.reshape(N, b)`` is ``problems.residual(problem, X_T)``.
W is the dict of the model's named parameters W1..WL (and b1..bL with biases); any other learner
(:class:`ntkcheck.models.base.Learner`, e.g. the LSTM of :mod:`ntkcheck.models.lstm`) works through the func path
with its own named parameters.

Other problem families (:mod:`ntkcheck.problems.lasso`, :mod:`ntkcheck.problems.logistic`) go through the func path
with r = vec(``problem.residual(X_T)``): the smooth part's residual M X_T − Y for the LASSO, the logits M X_T for
logistic regression; there the training loss F(X_T) is not ½‖r‖². Through a prox step (updates ``prox``, ``fista``)
the soft-threshold S_τ(v) = sign(v)·relu(|v| − τ) is differentiated by autograd: its kink |v_j| = τ_j gets relu's
derivative at 0, which is 0 (torch's choice; sign's derivative is 0), so ∂S/∂v_j = 1 for |v_j| > τ_j and 0 for
|v_j| ≤ τ_j, kink included. A draw almost surely never lands on a kink; the exact zeros the prox makes lie inside
(−τ_j, τ_j), where 0 is the true derivative.

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
:mod:`ntkcheck.instruments.structured` (same return convention). Matrix-free products v ↦ J(J̃ᵀv) are one VJP and
one JVP (:func:`ntk_operator`), for Lanczos (:func:`ntkcheck.instruments.linalg.extreme_eigenvalues`) when K is not needed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.linalg import get_blas_funcs
from scipy.sparse.linalg import LinearOperator
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

with warnings.catch_warnings():  # torch's forward-mode decompositions still call torch.jit.script, which torch itself
    warnings.simplefilter("ignore", DeprecationWarning)  # deprecates: a warning against torch, once, at this import
    warnings.simplefilter("ignore", FutureWarning)
    import torch._decomp.decompositions_for_jvp  # noqa: F401

from ntkcheck.instruments.structured import structured_jacobian
from ntkcheck.models.base import Learner
from ntkcheck.models.math_l2o import MathL2O
from ntkcheck.problems.qp import Problem

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


def with_mode(model: Learner, mode: str, *, dtype: torch.dtype | None = None) -> Learner:
    """A copy of ``model`` (same weights and architecture; for MathL2O the same wide-layer path) with ``detach`` set
    by ``mode``: ``"true"`` → detach=False (J), ``"detached"`` → detach=True (J̃). ``dtype`` converts the copy."""
    _choice("mode", mode, MODES)
    twin = model.with_detach(mode == "detached")
    return twin if dtype is None else twin.to(dtype=dtype)


def parameters(model: Learner) -> dict[str, torch.Tensor]:
    """The model's named parameters (W1..WL, b1..bL for MathL2O), detached, in registration order."""
    return {k: v.detach() for k, v in model.named_parameters()}


def _output(problem: Problem, X: torch.Tensor, output: str) -> torch.Tensor:
    """r = vec(problem.residual(X_T)) (least squares: M X_T − Y, rows (i, k)) or vec(X_T) (rows (i, j))."""
    return (problem.residual(X) if output == "residual" else X).reshape(-1)


class _Unrolled(nn.Module):
    """r(W) of one unroll as a module's forward, so that ``functional_call`` can substitute W."""

    def __init__(self, model: Learner):
        super().__init__()
        self.model = model

    def forward(self, problem: Problem, T: int, output: str) -> torch.Tensor:
        return _output(problem, self.model.unroll(problem, T).X[-1], output)


def residual_fn(model: Learner, problem: Problem, T: int, *, mode: str = "true", output: str = "residual",
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


def jacobian(model: Learner, problem: Problem, T: int, *, mode: str = "true", method: str = "auto",
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
    Any other learner (:class:`ntkcheck.models.base.Learner`, e.g. the LSTM, whose h_0 rows depend on the instance's
    place in the batch): ``jacrev`` of the whole map r(W), ``chunk`` rows per vmapped VJP (default all).
    ``method="structured"``: :func:`ntkcheck.instruments.structured.structured_jacobian` (MathL2O only).
    ``method="auto"``: structured where it applies (a MathL2O with an angular wide layer, output r), func otherwise.
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
    mlp = isinstance(model, MathL2O)
    if method == "structured" and not mlp:
        raise ValueError(f"method='structured' applies to MathL2O only (got a {type(model).__name__}); "
                         "use method='func' or 'auto'")
    if method == "auto":
        structured = mlp and model.angular and model.update.name == "gd" and isinstance(problem, Problem)
        method = "structured" if structured and output == "residual" else "func"
    if method == "structured":
        return _structured(model, problem, T, mode, names, output)
    return _func_jacobian(model, problem, T, mode, names, output, chunk)


def _structured(model, problem, T, mode, names, output):
    if output != "residual":
        raise NotImplementedError("method='structured' computes the Jacobian of r only; use method='func' for X_T")
    J = structured_jacobian(with_mode(model, mode), problem, T, mode=mode)
    return {k: J[k] for k in names}


def _func_jacobian(model, problem, T, mode, names, output, chunk):
    """∂r/∂W by torch.func: vmap over the instances for the MLP on least squares (each instance's unroll is
    independent), one jacrev of the whole residual otherwise."""
    if not (isinstance(model, MathL2O) and isinstance(problem, Problem)):
        return _whole_jacobian(model, problem, T, mode, names, output, chunk)
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


def _whole_jacobian(model, problem, T, mode, names, output, chunk):
    """∂r/∂W of all N instances at once: ``jacrev`` of :func:`residual_fn` over the parameters ``names``."""
    f = residual_fn(model, problem, T, mode=mode, output=output)
    jac = jacrev(f, chunk_size=chunk)({k: v for k, v in parameters(model).items() if k in names})
    return {k: jac[k].reshape(jac[k].shape[0], -1) for k in names}


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


def self_gram(A: torch.Tensor) -> torch.Tensor:
    """A Aᵀ, exactly symmetric. On the CPU in float32/64 by BLAS syrk (through scipy), which computes one triangle:
    half the multiply-adds of the general product ``A @ A.T`` (torch has no syrk); elsewhere ``A @ A.T``."""
    if A.device.type != "cpu" or A.dtype not in (torch.float32, torch.float64) or A.requires_grad or 0 in A.shape:
        return A @ A.T
    syrk = get_blas_funcs("syrk", dtype=np.float64 if A.dtype == torch.float64 else np.float32)
    upper = syrk(1.0, A.T.numpy(), trans=1)  # Aᵀ is Fortran-ordered: no copy; (Aᵀ)ᵀAᵀ = A Aᵀ, upper triangle
    return torch.from_numpy(np.triu(upper) + np.triu(upper, 1).T)


def gram(J: dict[str, torch.Tensor], Jt: dict[str, torch.Tensor] | None = None, *, N: int,
         kind: str | None = None) -> Gram:
    """K = Σ_p J_p J'_pᵀ with J' = ``Jt`` (default J). ``N`` instances split the rows evenly."""
    Jt = J if Jt is None else Jt
    if set(J) != set(Jt):
        raise ValueError(f"J and Jt must have the same parameters (got {sorted(J)} and {sorted(Jt)})")
    # a block whose J̃_p equals J_p (all of them at W_L = 0, where detaching changes nothing) is J_p J_pᵀ: the same
    # syrk as K's, so that K̃ = K there exactly
    blocks = {k: self_gram(J[k]) if Jt[k] is J[k] or torch.equal(J[k], Jt[k]) else J[k] @ Jt[k].T for k in J}
    values = list(blocks.values())
    K = sum(values[1:], values[0].clone())
    n = K.shape[0]
    if n % N:
        raise ValueError(f"{n} rows cannot be split into N = {N} instances")
    return Gram(K, blocks, N, n // N, kind or ("true" if Jt is J else "training"))


def empirical_ntk(model: Learner, problem: Problem, T: int, *, kernel: str = "true", method: str = "auto",
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


def ntk_operator(model: Learner, problem: Problem, T: int, *, kernel: str = "true", part: str = "full",
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
