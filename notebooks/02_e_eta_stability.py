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
# # 2. The e–η stability map against the Lemma thresholds and 2/λ_max
#
# **Question.** Which pairs (e, η) of expansion coefficient and meta learning rate train well?
#
# **What the theory says.** Lemmas 5.1–5.4 ask for a *large* e: e ≥ C·f(T, L) with an unknown constant C
# (scaling laws, `bounds` keys `lemma5_*`). The linearised dynamics r_{k+1} = (I − ηK)r_k are stable only for
# η < 2/λ_max(K_0), and at the deterministic initialisation λ_max(K_0) ∝ e^{2(L−1)} *exactly* (W_L = 0, so
# K_0 is the last-layer block, whose Jacobian is linear in G_{L−1,t} ∝ e^{L−1}; Corollary C.1). So a larger e
# forces a smaller η, as e^{−2(L−1)}: the two requirements pull against each other.
#
# **What we do.** A tiny configuration, a grid of e and of η (placed relative to 2/λ_max(K_0(e)) so that every
# column of the grid straddles the line), 30 iterations of the real trainer per point; record whether the loss
# ever rose, whether it stayed finite, the final gain over GD, and the share of saturated step sizes P.

# %%
import torch

torch.set_num_threads(1)


import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

import bounds
from bounds.local import lambda_max_of_e
from ntkcheck.config import TrainConfig, hidden_widths
from ntkcheck.engine.training import train
from ntkcheck.instruments import linalg, ntk
from ntkcheck.models import init
from ntkcheck.models import math_l2o as model
from ntkcheck.problems import qp as problems

sns.set_theme(style="whitegrid", context="notebook")
pd.set_option("display.width", 160)

# %%
base = TrainConfig(N=4, d=8, b=6, width=64, L=3, T=5, iters=30, device="cpu", checkpoint_every=10_000, seed=0)
problem = problems.generate(N=base.N, d=base.d, b=base.b, seed=base.seed)
widths = hidden_widths(base.width, base.L)


def lambda_max_K0(e):
    """λ_max of the NTK at the deterministic initialisation with coefficient e (float64, dense)."""
    net = model.build(widths, init.deterministic(widths, e=e, seed=base.seed))
    return linalg.kernel_spectrum(ntk.empirical_ntk(net, problem, base.T).K).lambda_max


lam_at_1 = lambda_max_K0(1.0)
for e_check in (7.0, 50.0):  # the exact homogeneity, measured
    measured, scaled = lambda_max_K0(e_check), lambda_max_of_e(lam_at_1, e_check, base.L)
    print(f"e = {e_check:g}: λ_max(K_0) measured {measured:.6e}, e^(2(L−1))·λ_max(1) = {scaled:.6e}, "
          f"relative gap {abs(measured / scaled - 1):.1e}")
    assert abs(measured / scaled - 1) < 1e-9

# %% [markdown]
# The conditions from `bounds`: the Lemma 5.x e-thresholds (scaling laws, constant C unknown: shown at C = 1)
# and, for reference, Eq. 14's a-priori step bound η ≤ 1/Λ̄₀², Λ̄₀² ≥ λ_max(K_0) computed from the GD
# trajectory alone (also ∝ e^{−2(L−1)}).

# %%
lemmas = [c for c in bounds.registry() if c.key.startswith("lemma5")]
config_q = {"T": base.T, "L": base.L, "e": 1.0}
lemma_e = {}
for c in lemmas:
    v = c.evaluate(config_q)
    lemma_e[c.source] = v.threshold
    print(f"{c.source}: {c.text:32s} threshold e ≥ {v.threshold:10.4g}  (C = {c.constants['C']:g}, status {c.status}; {v.note})")

data_q = bounds.gd_quantities(problem.M.numpy(), problem.Y.numpy(), base.T)
apriori = next(c for c in bounds.registry() if c.key == "eq14.eta_apriori")


def eta_apriori(e):
    return apriori.evaluate({**data_q, "e": e, "L": base.L, "eta": 1.0, "step_scale": base.step_scale}).threshold


# %% [markdown]
# ## The grid: 6 values of e, 9 of η per e (η·λ_max(K_0)/2 from 0.1 to 100), 30 SGD iterations each

# %%
es = (1.0, 2.0, 5.0, 20.0, 100.0, 1000.0)
ratios = np.logspace(-1, 2, 9)  # η / (2/λ_max(K_0(e)))


def outcome(loss, P_saturated):
    if not np.isfinite(loss).all():
        return "non-finite"
    if np.max(np.diff(loss)) > 1e-9 * loss[0]:
        return "loss rose"
    return "monotone, P saturating" if P_saturated > 0.01 else "monotone"


rows = []
for e in es:
    threshold = 2.0 / lambda_max_of_e(lam_at_1, e, base.L)
    for ratio in ratios:
        cfg = base.replace(e=e, lr=float(ratio * threshold))
        run = train(cfg)  # in memory: nothing is written
        wide = run.metrics
        rows.append({"e": e, "eta": cfg.lr, "eta_over_threshold": ratio, "threshold": threshold,
                     "status": run.status, "gain": wide["gain"].iloc[-1], "loss_0": wide["loss"].iloc[0],
                     "loss_end": wide["loss"].iloc[-1], "P_saturated": wide["P_saturated"].iloc[-1],
                     "outcome": outcome(wide["loss"].to_numpy(), wide["P_saturated"].iloc[-1])})
grid = pd.DataFrame(rows)
grid.pivot(index="eta_over_threshold", columns="e", values="gain").round(3)

# %%
grid.pivot(index="eta_over_threshold", columns="e", values="outcome")

# %% [markdown]
# ## The map

# %%
e_line = np.logspace(np.log10(min(es)) - 0.2, np.log10(max(lemma_e.values())) + 0.2, 100)
fig, ax = plt.subplots(figsize=(9, 5.5))
shown = grid.assign(**{"gain (clipped to [−0.2, 0.6])": grid.gain.clip(-0.2, 0.6)})
sns.scatterplot(data=shown, x="e", y="eta", hue="gain (clipped to [−0.2, 0.6])", style="outcome", palette="viridis",
                hue_norm=(-0.2, 0.6), s=90, ax=ax)
ax.plot(e_line, [2.0 / lambda_max_of_e(lam_at_1, e, base.L) for e in e_line], color="k", lw=1.5,
        label="2/λ_max(K_0(e)) ∝ e^(−2(L−1)) (measured)")
ax.plot(e_line, [eta_apriori(e) for e in e_line], color="grey", ls=":", label="Eq. 14 a priori 1/Λ̄₀² (bounds)")
for (source, e_min), colour in zip(lemma_e.items(), sns.color_palette("dark", len(lemma_e))):
    if np.isfinite(e_min):
        ax.axvline(e_min, color=colour, ls="--", lw=1, label=f"{source}: e ≥ C·{e_min:.3g} (C = 1 shown)")
ax.set(xscale="log", yscale="log", xlabel="expansion coefficient e", ylabel="meta learning rate η",
       title=f"e–η map, N={base.N}, {base.b}×{base.d}, n={base.width}, T={base.T}, {base.iters} iterations")
ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
plt.show()

# %% [markdown]
# In the coordinates of the linear theory, η·λ_max(K_0)/2, the columns of the grid fall on top of each other
# once e is large enough:

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
plot = grid.assign(e=grid.e.map(lambda x: f"{x:g}"))
sns.lineplot(data=plot, x="eta_over_threshold", y="gain", hue="e", marker="o", palette="viridis", ax=axes[0],
             legend=False)
sns.lineplot(data=plot, x="eta_over_threshold", y="P_saturated", hue="e", marker="o", palette="viridis", ax=axes[1])
for ax in axes:
    ax.axvline(1.0, color="k", lw=1, ls="--")
    ax.set(xscale="log", xlabel="η / (2/λ_max(K_0))")
axes[0].set(ylabel="gain over GD after 30 iterations", ylim=(max(-1.0, plot.gain.min() - 0.05), None))
axes[1].set(ylabel="share of saturated P")
sns.move_legend(axes[1], "upper left", title="e")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Numbers behind the closing statements

# %%
large = grid[grid.e >= 5]
below, above = large[large.eta_over_threshold < 1], large[large.eta_over_threshold > 1]
far = large[large.eta_over_threshold > 3]  # well above the line
spread = grid[grid.e >= 20].groupby("eta_over_threshold").gain.agg(lambda g: g.max() - g.min())
best = large.loc[large.gain.idxmax()]
print(f"e ≥ 5, η < 2/λ_max: outcomes {sorted(below.outcome.unique())}, gain {below.gain.min():.3f} … {below.gain.max():.3f}")
print(f"e ≥ 5, η > 2/λ_max: outcomes {sorted(above.outcome.unique())}, gain {above.gain.min():.3f} … {above.gain.max():.3f}, "
      f"saturated P up to {above.P_saturated.max():.2f}")
print(f"largest spread of the gain across e ≥ 20 at one η/(2/λ_max): {spread.max():.2e}")
print(f"e ≥ 5, η > 3·(2/λ_max): gain {far.gain.min():.3f} … {far.gain.max():.3f}")
print(f"best gain for e ≥ 5: {best.gain:.3f} at η/(2/λ_max) = {best.eta_over_threshold:.3g}, e = {best.e:g}")
print(f"non-finite runs: {(grid.outcome == 'non-finite').sum()} of {len(grid)}; "
      f"small e (< 5): gains {grid[grid.e < 5].gain.min():.3f} … {grid[grid.e < 5].gain.max():.3f}")
print("Lemma thresholds at C = 1: " + ", ".join(f"{k} {v:.3g}" for k, v in lemma_e.items()))
gap = (2.0 / lambda_max_of_e(lam_at_1, 50.0, base.L)) / eta_apriori(50.0)
print(f"Eq. 14 a priori bound 1/Λ̄₀² lies {gap:.3g}× below 2/λ_max(K_0) (the same factor at every e)")
assert gap > 1  # Λ̄₀² ≥ λ_max(K_0): the a-priori step is always the safer one

assert (below.outcome == "monotone").all()  # below the line: a monotone decrease, no saturation
assert (grid.outcome != "non-finite").all()  # P = 2σ(·) ∈ (0, 2) bounds every step: the loss stays finite
assert spread.max() < 0.01  # for e ≥ 20 the gain depends on (e, η) through η·λ_max(K_0(e)) only
assert far.gain.max() < large.gain.max() - 0.02  # well above the line the gain drops
assert abs(np.log10(best.eta_over_threshold)) < 0.5  # the best gain sits near the line (within ~3×)

# %% [markdown]
# ## What the numbers show
#
# * **λ_max(K_0) ∝ e^{2(L−1)} exactly** at the deterministic initialisation (measured to ~1e−9 relative at
#   two values of e), so the stability line η = 2/λ_max(K_0) has slope −2(L−1) = −4 on the map.
# * **Below the line the loss falls monotonically** with no saturated step sizes (asserted for e ≥ 5). For
#   e ≥ 20 the outcome depends on (e, η) only through η·λ_max(K_0(e)): the gain curves of different e lie on
#   top of each other (spread printed above, asserted < 0.01; e = 5 is close). A larger e does not help by
#   itself; it only rescales the admissible η. The best gain sits near the line (within a factor 3 of
#   2/λ_max, on either side: the printed optimum), not deep inside the stable region.
# * **Above the line the run does not diverge**: the step sizes P = 2σ(·) are bounded, so the sigmoid
#   saturates (share printed above) instead, the kernel collapses, and well above the line (η > 3·2/λ_max)
#   the gain drops (asserted; printed range). The linear theory's
#   "unstable" is the real model's "saturated and stuck", not a blow-up.
# * **Eq. 14's a-priori bound** (from the GD trajectory alone) is valid but loose: its line runs parallel to
#   the measured one, below it by the printed factor.
# * **Small e (1, 2) behave differently** (non-monotone losses, larger or smaller gains): there the inner
#   layers move relative to their scale, outside the NTK regime the proof describes.
# * **The Lemma 5.x thresholds are not visible in the data.** With C = 1 they sit at the printed values of e;
#   nothing changes at those e (for e ≥ 5 the map is invariant along the line). With the constant unknown, the
#   lemmas cannot be confirmed or refuted by these runs; what the runs do show is that e and η must be chosen
#   together, through η·e^{2(L−1)}.
