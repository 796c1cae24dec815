"""The Jacobian of r(W) = vec(M X_T(W) − Y) by a structured adjoint recursion (all outputs at once).

Per instance i (step s_i = step_scale/β_i, g_{t−1} = ∇F(X_{t−1}) = H_i x_{t−1} − c_i):

    X_t = X_{t−1} − s_i · P_t ⊙ g_{t−1},      P_t = 2σ(φ_t),   φ_{t,j} = h_{t,j} · S(h_{t,j})

The rows of ∂r/∂W for the b outputs of instance i are carried together as a b×d matrix of cotangents
Λ_t (row k: the adjoint of r_{ik} with respect to x_{i,t}), starting from Λ_T = M_i. For t = T..1:

    U_t      = Λ_t ⊙ (−s_i g_{t−1} ⊙ 2σ'(φ_t))                      cotangent of φ_t, per output
    J       += Σ_j U_t[:, j] · ∂φ_{t,j}/∂W                             (weight sharing: every step adds)
    Λ_{t−1}  = Λ_t − s_i (Λ_t ⊙ P_t) H_i                                detached inputs (``mode="detached"``)
             + (U_t ⊙ ∂φ/∂z₁) H_i + U_t ⊙ ∂φ/∂z₂                         and, for the true Jacobian, P_t's
                                                                        dependence on z_t = (g_{t−1}, x_{t−1})

(H_i is symmetric, so H_i-products act on the right of the row-wise cotangents.)

The wide layer's part of Σ_j U[:, j] ∂φ_j/∂W never forms the N·d×n feature matrix: with
A_t[o, c] = Σ_{j : h_j·w_c > 0} U_t[o, j] h_j (a prefix sum over the rows sorted by angle, since the rows
that activate column c form an arc around θ_c), ∂/∂W_L[c] = w_c · Ā[o, c] and ∂/∂w_c = W_L[c] Ā[o, c],
with Ā = Σ_t A_t. The earlier layers (2-wide) enter through ∂φ_j/∂θ = S(h_j) · ∂h_j/∂θ (forward mode).
"""

from __future__ import annotations

import torch
from torch.func import jvp

from ntkcheck.angular import arc_bounds, arc_sums, prefix_sums
from ntkcheck.model import MathL2O
from ntkcheck.problems import Problem, gradient

MODES = ("true", "detached")


def _early_layers(model: MathL2O) -> list[str]:
    """Parameters before the wide layer: W_1..W_{L−2} (2×2 each)."""
    return [f"W{ell}" for ell in range(1, model.L - 1)]


def _features_upto(model: MathL2O, early: dict, Z: torch.Tensor) -> torch.Tensor:
    """h = G_{L−2}(z) = ReLU(… ReLU(z W_1) … W_{L−2}), or z itself when L = 2: the wide layer's input."""
    G = Z
    for ell in range(1, model.L - 1):
        G = torch.relu(G @ early[f"W{ell}"])
    return G


def _step_record(model, problem, X, early, theta, prefix, mode):
    """Everything the backward sweep needs from one forward step (no autograd graph)."""
    grad = gradient(problem, X)
    Z = torch.stack((grad, X), dim=-1).reshape(-1, 2)
    h = _features_upto(model, early, Z)
    S, _ = arc_sums(h, theta, prefix)  # ∂φ/∂h, float64
    phi = (h.double() * S).sum(1)
    P = 2 * torch.sigmoid(phi)
    record = {"grad": grad, "h": h.double(), "S": S, "P": P.to(X.dtype).reshape(X.shape),
              "dP": (P * (1 - P / 2)).reshape(X.shape)}  # d(2σ(φ))/dφ = 2σ(1 − σ) = P(1 − P/2)
    record["E"] = _early_jacobian(model, early, Z, S)
    if mode == "true":
        record["phi_z"] = _input_jacobian(model, early, Z, S)
    return record


def _early_jacobian(model, early, Z, S) -> torch.Tensor:
    """∂φ_j/∂θ for every early scalar parameter θ (R, P_early): S(h_j) · ∂h_j/∂θ by forward mode."""
    columns = []
    for name in _early_layers(model):
        for index in range(early[name].numel()):
            tangent = {k: torch.zeros_like(v) for k, v in early.items()}
            tangent[name].view(-1)[index] = 1.0
            _, dh = jvp(lambda p: _features_upto(model, p, Z), (early,), (tangent,))
            columns.append((S * dh.double()).sum(1))
    return torch.stack(columns, 1) if columns else S.new_zeros(S.shape[0], 0)


def _input_jacobian(model, early, Z, S) -> torch.Tensor:
    """∂φ_j/∂z_j (R, 2) = (∂h_j/∂z_j)ᵀ S(h_j)."""
    out = []
    for a in range(2):
        tangent = torch.zeros_like(Z)
        tangent[:, a] = 1.0
        _, dh = jvp(lambda z: _features_upto(model, early, z), (Z,), (tangent,))
        out.append((S * dh.double()).sum(1))
    return torch.stack(out, 1)


def _times_H(problem: Problem, V: torch.Tensor) -> torch.Tensor:
    """V_i H_i for row-wise cotangents V (N, b, d); H_i = M_iᵀM_i."""
    if problem.H is not None:
        return V @ problem.H.to(V.dtype)
    M = problem.M.to(V.dtype)
    return (V @ M.mT) @ M


def _wide_layer_sums(h: torch.Tensor, U: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """A[i, o, c] = Σ_{j : h_ij·w_c > 0} U[i, o, j] h_ij for every instance i, output o and column c.

    h: (N, d, 2) rows of the wide layer's input, U: (N, b, d) cotangents, W: (2, n). The rows of an
    instance that activate column c are those whose angle lies within π/2 of θ_c: an arc of the rows
    sorted by angle, read off doubled prefix sums.
    """
    N, d, _ = h.shape
    psi = torch.atan2(h[..., 1], h[..., 0])
    psi, order = torch.sort(psi, dim=1)
    h_sorted = torch.gather(h, 1, order[..., None].expand(N, d, 2))
    U_sorted = torch.gather(U, 2, order[:, None, :].expand_as(U))
    V = U_sorted[..., None] * h_sorted[:, None]  # (N, b, d, 2)
    prefix = torch.cat((V.new_zeros(*V.shape[:2], 1, 2), torch.cumsum(torch.cat((V, V), 2), 2)), 2)
    lo, hi = arc_bounds(W.T.double(), psi)  # (N, n): for each instance its own arc of rows per column
    index = lambda k: k[:, None, :, None].expand(N, U.shape[1], k.shape[1], 2)  # noqa: E731
    return torch.gather(prefix, 2, index(hi)) - torch.gather(prefix, 2, index(lo))  # (N, b, n, 2)


@torch.no_grad()
def structured_jacobian(model: MathL2O, problem: Problem, T: int, *, mode: str = "true") -> dict[str, torch.Tensor]:
    """∂r/∂W for r = vec(M X_T − Y) (rows ordered (instance, row)), as {name: (N·b, numel)} in float64.

    ``mode="true"``: the Jacobian of the map; ``"detached"``: what detached backpropagation computes
    (the model's inputs z_t held fixed). Needs the angular form (bias-free wide layer with 2-D input).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)} (got {mode!r})")
    if not model.angular:
        raise ValueError("the structured Jacobian needs a bias-free wide layer (model.angular)")
    dtype = torch.float64
    problem = problem.to(dtype=dtype)
    params = {k: v.detach().to(dtype) for k, v in model.named_parameters()}
    early = {k: params[k] for k in _early_layers(model)}
    W, w_out = params[f"W{model.L - 1}"], params[f"W{model.L}"][:, 0]
    theta, prefix = prefix_sums(W, w_out)
    s = (model.step_scale / problem.beta)[:, None, None]  # (N, 1, 1)

    X = problem.X0()
    steps = []
    for _ in range(T):
        rec = _step_record(model, problem, X, early, theta, prefix, mode)
        steps.append(rec)
        X = X - s[:, :, 0] * rec["P"] * rec["grad"]

    N, b, d = problem.M.shape
    Lam = problem.M.clone()  # Λ_T: row k of instance i is m_ik
    A_bar = torch.zeros(N, b, W.shape[1], 2, dtype=dtype)
    J_early = torch.zeros(N, b, sum(early[k].numel() for k in early), dtype=dtype)
    for rec in reversed(steps):
        U = Lam * (-s * (rec["grad"] * rec["dP"])[:, None, :])
        h = rec["h"].reshape(N, d, 2)
        A_bar += _wide_layer_sums(h, U, W)
        J_early += U @ rec["E"].reshape(N, d, -1)
        Lam_next = Lam - _times_H(problem, s * Lam * rec["P"][:, None, :])
        if mode == "true":
            phi_z = rec["phi_z"].reshape(N, d, 2)
            Lam_next = Lam_next + _times_H(problem, U * phi_z[:, None, :, 0]) + U * phi_z[:, None, :, 1]
        Lam = Lam_next

    out, offset = {}, 0
    for name in early:
        size = early[name].numel()
        out[name] = J_early[..., offset:offset + size].reshape(N * b, size)
        offset += size
    out[f"W{model.L - 1}"] = (A_bar * w_out[:, None]).permute(0, 1, 3, 2).reshape(N * b, -1)  # [o, a, c]
    out[f"W{model.L}"] = (A_bar * W.T).sum(-1).reshape(N * b, -1)  # w_c · Ā[o, c]
    return out
