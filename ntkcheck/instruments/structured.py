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
Ā[o, c] = Σ_t Σ_{j : h_j·w_c > 0} U_t[o, j] h_j, ∂/∂W_L[c] = w_c · Ā[o, c] and ∂/∂w_c = W_L[c] Ā[o, c].
Row j activates an arc [lo_j, hi_j) of the columns sorted by angle (the forward pass's own arcs), and
that order is the same at every step, so Ā is one cumulative sum of a difference array that every
step adds O(b·d) entries to. The earlier layers (2-wide) enter through ∂φ_j/∂θ = S(h_j) · ∂h_j/∂θ (forward mode).
"""

from __future__ import annotations

import torch
from torch.func import jacfwd, vmap

from ntkcheck.models.angular import arc_bounds, arc_sums, column_order, prefix_sums
from ntkcheck.models.math_l2o import MathL2O
from ntkcheck.problems.qp import Problem, gradient

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
    lo, hi = arc_bounds(h, theta)  # row j's active columns, in the doubled sorted order
    S, _ = arc_sums(h, theta, prefix, bounds=(lo, hi))  # ∂φ/∂h, float64
    phi = (h.double() * S).sum(1)
    P = 2 * torch.sigmoid(phi)
    record = {"grad": grad, "h": h.double(), "S": S, "lo": lo, "hi": hi, "P": P.to(X.dtype).reshape(X.shape),
              "dP": (P * (1 - P / 2)).reshape(X.shape)}  # d(2σ(φ))/dφ = 2σ(1 − σ) = P(1 − P/2)
    record["E"], phi_z = _row_jacobians(model, early, Z, S)
    if mode == "true":
        record["phi_z"] = phi_z
    return record


def _row_jacobians(model, early, Z, S) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row j: ∂φ_j/∂θ for every early scalar parameter θ (R, P_early) and ∂φ_j/∂z_j (R, 2).

    Both are S(h_j)ᵀ times the 2×· Jacobian of h_j = G_{L−2}(z_j), taken by forward mode row by row.
    """
    def h_row(z, params):
        return _features_upto(model, params, z[None])[0]

    dh_dz, dh_dp = vmap(jacfwd(h_row, argnums=(0, 1)), in_dims=(0, None))(Z, early)
    R = Z.shape[0]
    columns = [torch.einsum("ra,ra...->r...", S, dh_dp[name].double()).reshape(R, -1) for name in early]
    E = torch.cat(columns, 1) if columns else S.new_zeros(R, 0)
    return E, torch.einsum("ra,rab->rb", S, dh_dz.double())


def _times_H(problem: Problem, V: torch.Tensor) -> torch.Tensor:
    """V_i H_i for row-wise cotangents V (N, b, d); H_i = M_iᵀM_i."""
    if problem.H is not None:
        return V @ problem.H.to(V.dtype)
    M = problem.M.to(V.dtype)
    return (V @ M.mT) @ M


def _add_arcs(D: torch.Tensor, h: torch.Tensor, U: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> None:
    """D[i, o, lo_ij] += U[i, o, j] h_ij and D[i, o, hi_ij] −= U[i, o, j] h_ij: a difference array.

    [lo_ij, hi_ij) are row j's active columns in the doubled sorted order (the forward pass's own arcs),
    so after all steps cumsum(D)[q] + cumsum(D)[q + n] = Σ_{t, j : c_q active} U h: Ā for column q.
    """
    N, b, _ = U.shape
    V = U[..., None] * h[:, None]  # (N, b, d, 2)
    index = lambda k: k[:, None, :, None].expand(N, b, k.shape[1], 2)  # noqa: E731
    D.scatter_add_(2, index(lo), V)
    D.scatter_add_(2, index(hi), -V)


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
    if model.update.name != "gd":
        raise ValueError(f"the structured Jacobian is derived for the gd update rule (got {model.update.name!r}); use "
                         "the func Jacobian")
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
    n = W.shape[1]
    D = W.new_zeros(N, b, 2 * n + 1, 2)  # difference array over the doubled sorted columns
    J_early = W.new_zeros(N, b, sum(early[k].numel() for k in early))
    for rec in reversed(steps):
        U = Lam * (-s * (rec["grad"] * rec["dP"])[:, None, :])
        _add_arcs(D, rec["h"].reshape(N, d, 2), U, rec["lo"].reshape(N, d), rec["hi"].reshape(N, d))
        J_early += U @ rec["E"].reshape(N, d, -1)
        through_H = -s * Lam * rec["P"][:, None, :]
        if mode == "true":  # P_t's dependence on z_t = (g, x): its g-part joins the one product with H_i
            phi_z = rec["phi_z"].reshape(N, d, 2)
            Lam = Lam + _times_H(problem, through_H + U * phi_z[:, None, :, 0]) + U * phi_z[:, None, :, 1]
        else:
            Lam = Lam + _times_H(problem, through_H)

    C = torch.cumsum(D, dim=2)
    A_bar = W.new_empty(N, b, n, 2)
    A_bar[:, :, column_order(W)[1]] = C[:, :, :n] + C[:, :, n:2 * n]  # Ā[i, o, c] = Σ_t A_t[i, o, c]
    out, offset = {}, 0
    for name in early:
        size = early[name].numel()
        out[name] = J_early[..., offset:offset + size].reshape(N * b, size)
        offset += size
    out[f"W{model.L - 1}"] = (A_bar * w_out[:, None]).permute(0, 1, 3, 2).reshape(N * b, -1)  # [o, a, c]
    out[f"W{model.L}"] = (A_bar * W.T).sum(-1).reshape(N * b, -1)  # w_c · Ā[o, c]
    return out
