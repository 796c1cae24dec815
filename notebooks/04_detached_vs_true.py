# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. Detached against true gradient: K and K̃ along training
#
# **Question.** The paper's code detaches the network's inputs z_t = (∇F(X_{t−1}), X_{t−1}) before
# backpropagation, so training does not follow the true gradient of F(X_T(W)). How far is the training
# direction from the true one, and does it matter?
#
# **What the theory says.** The NTK analysis treats the training step as W_{k+1} = W_k − η Jᵀ r_k with the
# true Jacobian J = ∂r/∂W, so that r changes by −ηK r, K = J Jᵀ (symmetric, PSD). With detached inputs the
# step is −η J̃ᵀ r (J̃: what detached backpropagation computes) and r changes by −ηK̃ r with the *training
# kernel* K̃ = J J̃ᵀ: not symmetric, not PSD in general; the loss change −η rᵀK̃ r is governed by its
# symmetric part ½(K̃ + K̃ᵀ). At W_0 (W_L = 0) every path through the inputs carries a factor W_L, so
# J̃ = J and K̃ = K; away from W_0 they differ.
#
# **What we do.** Two runs from the same W_0: `detach=True` (the paper) and `detach=False` (true gradient),
# same η = 0.1·(2/λ_max(K_0)), 200 SGD iterations; at snapshots k we measure K_k and K̃_k (float64, dense,
# `ntkcheck.measure`) in both runs.

# %%
import torch

torch.set_num_threads(1)

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

import ntkcheck
from ntkcheck.config import hidden_widths
from ntkcheck.engine import learned
from ntkcheck.instruments import dynamics, linalg, ntk
from ntkcheck.models import init
from ntkcheck.models import math_l2o as model
from ntkcheck.problems import qp as problems

sns.set_theme(style="whitegrid", context="notebook")
pd.set_option("display.width", 160)

# %%
N, d, b, n, L, T, e, seed = 8, 16, 12, 256, 3, 10, 50.0, 0
iters, snapshots = 200, (0, 1, 2, 5, 10, 20, 50, 100, 200)
problem = problems.generate(N=N, d=d, b=b, seed=seed)
widths = hidden_widths(n, L)
W0 = init.deterministic(widths, e=e, seed=seed)
K0 = ntk.empirical_ntk(model.build(widths, W0), problem, T).K
eta = 0.1 * dynamics.stability_threshold(linalg.kernel_spectrum(K0).lambda_max)
print(f"N·b = {N * b} outputs, n = {n}, T = {T}, e = {e:g}, η = {eta:.4e}")


def along_training(detach):
    """SGD with the given gradient, then K_k, K̃_k and friends at every snapshot."""
    net = model.build(widths, W0, detach=detach)
    losses, weights = learned.sgd_snapshots(net, problem, T, eta, iters, keep=snapshots)
    rows = []
    for k in snapshots:
        m = model.build(widths, weights[k], detach=detach)
        probe = ntkcheck.measure(m, problem, T, lr=eta, method="dense", kernels=True)
        K, Kt = probe.kernels
        with torch.no_grad():
            r = problems.residual(problem, m.unroll(problem, T).X[-1]).reshape(-1).numpy()
        rows.append({
            "run": "detached (paper)" if detach else "true gradient", "k": k, "loss": probe.loss,
            "‖K̃ − K‖/‖K‖": probe.K_vs_K_training.rel_change,
            "asymmetry ‖K̃ − K̃ᵀ‖/‖K̃‖": probe.K_training.asymmetry,
            "drift ‖K_k − K_0‖/‖K_0‖": linalg.kernel_drift(K0, K).rel_change,
            "λ_max(K)": probe.K.lambda_max, "λ_max(½(K̃+K̃ᵀ))": probe.K_training.lambda_max,
            "λ_min(½(K̃+K̃ᵀ))": probe.K_training.lambda_min, "tol": probe.K.rank.tol,
            "rank K": probe.K.rank.rank, "rᵀK̃r / rᵀKr": float(r @ Kt @ r) / float(r @ K @ r),
        })
    return losses, pd.DataFrame(rows)


loss_det, table_det = along_training(detach=True)
loss_true, table_true = along_training(detach=False)
table = pd.concat([table_det, table_true], ignore_index=True)
print(table.to_string(index=False, float_format="{:.4g}".format))

# %% [markdown]
# ## The loss of the two runs

# %%
losses = pd.DataFrame({"k": np.arange(iters + 1), "detached (paper)": loss_det, "true gradient": loss_true})
ax = sns.lineplot(data=losses.melt("k", var_name="run", value_name="F(X_T)"), x="k", y="F(X_T)", hue="run")
ax.set_xscale("symlog", linthresh=1)
ax.set(xlim=(0, iters), title="Training loss with detached and with true gradients")
plt.show()
print(f"final loss: detached {loss_det[-1]:.5f}, true gradient {loss_true[-1]:.5f}, "
      f"largest relative difference along training {np.max(np.abs(loss_det / loss_true - 1)):.2e}")

# %% [markdown]
# ## K against K̃ along training

# %%
panels = ["‖K̃ − K‖/‖K‖", "asymmetry ‖K̃ − K̃ᵀ‖/‖K̃‖", "drift ‖K_k − K_0‖/‖K_0‖", "λ_max(K)", "λ_max(½(K̃+K̃ᵀ))",
          "rᵀK̃r / rᵀKr"]
long = table[table.k > 0].melt(id_vars=["run", "k"], value_vars=panels, var_name="quantity", value_name="value")
g = sns.relplot(data=long, x="k", y="value", hue="run", style="run", col="quantity", col_wrap=3, kind="line",
                markers=True, facet_kws={"sharey": False}, height=2.8, aspect=1.25)
g.set(xscale="log")
g.set_titles("{col_name}", size=9)
for ax, name in zip(g.axes.flat, panels):
    if name.startswith("λ"):
        ax.set_yscale("log")
g.figure.suptitle("K = J Jᵀ and K̃ = J J̃ᵀ along training (k ≥ 1; at k = 0 they are equal)", y=1.03)
plt.show()

# %% [markdown]
# ## Numbers behind the closing statements

# %%
at0 = table[table.k == 0]
late = table[table.k == iters]
print(at0[["run", "‖K̃ − K‖/‖K‖", "asymmetry ‖K̃ − K̃ᵀ‖/‖K̃‖"]].to_string(index=False))
print(late[["run", "‖K̃ − K‖/‖K‖", "asymmetry ‖K̃ − K̃ᵀ‖/‖K̃‖", "drift ‖K_k − K_0‖/‖K_0‖", "λ_max(K)",
            "λ_min(½(K̃+K̃ᵀ))", "tol", "rᵀK̃r / rᵀKr", "rank K"]].to_string(index=False))
moved = table[table.k > 0]
print(f"k ≥ 1: ‖K̃ − K‖/‖K‖ from {moved['‖K̃ − K‖/‖K‖'].min():.3g} to {moved['‖K̃ − K‖/‖K‖'].max():.3g}; "
      f"λ_max(K) fell by {table['λ_max(K)'].iloc[0] / moved['λ_max(K)'].min():.3g}× at most; "
      f"rᵀK̃r/rᵀKr in [{moved['rᵀK̃r / rᵀKr'].min():.3f}, {moved['rᵀK̃r / rᵀKr'].max():.3f}]")
negative = moved[moved["λ_min(½(K̃+K̃ᵀ))"] < -moved["tol"]]
print(f"snapshots where ½(K̃+K̃ᵀ) has an eigenvalue below −tol: {len(negative)} of {len(moved)}")

assert (at0["‖K̃ − K‖/‖K‖"] <= 1e-12).all() and (at0["asymmetry ‖K̃ − K̃ᵀ‖/‖K̃‖"] <= 1e-12).all()  # W_L = 0 ⇒ K̃ = K
assert (late["‖K̃ − K‖/‖K‖"] > 1e-3).all()  # … and they drift apart once W_L moves, in both runs
assert len(negative) > 0  # ½(K̃ + K̃ᵀ) is indefinite somewhere along training
assert (moved["rᵀK̃r / rᵀKr"] > 0).all()  # the detached step still decreases the loss to first order here
assert np.max(np.abs(loss_det / loss_true - 1)) < 0.01  # the two runs stay within 1 %
assert moved["λ_max(K)"].min() < table["λ_max(K)"].iloc[0] / 10  # the kernel does not stay near K_0

# %% [markdown]
# ## What the numbers show
#
# * **At W_0 the two kernels are equal** (K̃ = K to 1e−12, asserted): the deterministic initialisation
#   (W_L = 0) makes the detached gradient exact at k = 0, as the theory's first step assumes.
# * **After the first update they part**: ‖K̃ − K‖/‖K‖ and the asymmetry of K̃ become non-zero at k = 1
#   and stay in the printed range (per cent level, not a rounding effect); the same happens in the run trained with the true
#   gradient, so it is a property of the weights away from W_0, not of how they were reached. The symmetric
#   part ½(K̃ + K̃ᵀ) has eigenvalues below −tol at the printed number of snapshots (asserted at one at least):
#   for some residual directions a detached step would *increase* the loss to first order.
# * **On the actual residual it does not**: rᵀK̃r / rᵀKr stays positive (asserted; printed range), so the
#   detached step is a descent direction on this run, and the two losses stay close (printed relative
#   difference, asserted < 1 %). Detaching is not what limits training here.
# * **The kernel is far from frozen**: ‖K_k − K_0‖/‖K_0‖ and the fall of λ_max(K) (printed; asserted more
#   than 10×) show that the kernel collapses within the first iterations in both runs, which is the lazy-training assumption of the
#   NTK argument failing, and the reason the K_0 prediction of notebook 3 parts from the measured loss.
