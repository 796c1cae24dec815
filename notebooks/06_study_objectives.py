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
# # 6. The objectives and momentum studies: does the NTK picture survive beyond the QP and GD?
#
# **Questions** (the paper's fourth and fifth). The convergence theorem is proved for least squares under a
# gradient-descent backbone. Does training still converge linearly, does the kernel stay put, and does training
# follow its first-order Taylor model on LASSO and logistic regression (with the proximal gradient), and under a
# momentum backbone (NAG on the QP, FISTA on LASSO/logistic)?
#
# **What the studies did** (`ntkcheck study objectives`, `ntkcheck study momentum`, recorded in
# `results/studies/objectives/` and `results/studies/momentum/`). One sweep each whose points are (problem, update)
# pairs at matched sizes (N = 4, d = 8, b = 6, width 128, T = 10, η = 1e-3, 200 SGD iterations), 10 seeds; every cell
# probed densely at k = 0 and K and trained beside its Taylor model (`linearised = true`). Per cell: the contraction
# ρ of the optimality gap F(X_T) − F* fitted on its whole curve (with R²), the kernel drift ‖K_K − K_0‖/‖K_0‖, the
# linearised-training gap |L_K − L^lin_K|/|L_K|. This notebook loads the records; nothing is retrained.

# %%
import torch

torch.set_num_threads(1)

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Image, Markdown, display

import ntkcheck
from ntkcheck.apps.study import load_study
from ntkcheck.apps.study.stats import contraction

sns.set_theme(style="whitegrid", context="notebook")
pd.set_option("display.width", 160)

ROOT = Path(ntkcheck.__file__).resolve().parents[1] / "results" / "studies"
results = {name: load_study(ROOT / name) for name in ("objectives", "momentum")}
for name, result in results.items():
    display(Markdown(f"**{name}.** {result.answer.paragraph}"))

# %% [markdown]
# ## The tables and figures
#
# Medians and interquartile ranges over the seeds per (problem, update), and the share of seeds whose gap contracts
# linearly (the 95 % interval of the fitted ρ below 1 and R² ≥ 0.9) with its Clopper–Pearson interval.

# %%
cols = ["setting", "n", "linear", "linear_lo", "linear_hi", "rho", "r2", "drift_rel_K", "linearised_gap_final",
        "gain_final", "trained"]
for name, result in results.items():
    display(Markdown(f"### {name}"))
    display(result.answer.tables[name][cols])
    display(Image(filename=str(ROOT / name / result.answer.figures[0])))

# %% [markdown]
# ## One seed's curves: is the decay geometric?
#
# The optimality gap F(X_T)_k − F* on a log scale for seed 0 of each setting (a straight line is a linear rate), and
# the fitted contraction recomputed from the sweep's own curve: it equals the study's table.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=False)
for ax, (name, result) in zip(axes, results.items()):
    sweep, per_cell = result.sweeps[name], result.answer.tables[f"{name}_cells"].set_index("cell")
    for cid, row in per_cell[per_cell["sweep_seed"] == 0].iterrows():
        curve = sweep.curves[sweep.curves["cell"] == cid]
        ax.semilogy(curve["iteration"], curve["F_T"] - row["F_star"], label=row["setting"])
        again = contraction(curve, column="F_T", floor=row["F_star"])
        assert np.isclose(again["rho"], row["rho"], rtol=1e-12, equal_nan=True)
    ax.set_xlabel("training iteration k")
    ax.set_ylabel("F(X_T) − F*")
    ax.set_title(name)
    ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# ## The kernel drift against the linearised gap, cell by cell
#
# If training stays in the NTK regime, a small drift goes with a small linearised gap.

# %%
cells = pd.concat([r.answer.tables[f"{n}_cells"].assign(study=n) for n, r in results.items()], ignore_index=True)
fig, ax = plt.subplots(figsize=(6, 4))
sns.scatterplot(data=cells, x="drift_rel_K", y="linearised_gap_final", hue="setting", style="study", ax=ax)
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("‖K_K − K_0‖ / ‖K_0‖")
ax.set_ylabel("|L_K − L^lin_K| / |L_K|")
plt.show()
cells.groupby(["study", "setting"])[["drift_rel_K", "linearised_gap_final"]].median()

# %% [markdown]
# ## Going further
#
# Other step sizes or sizes are axes of both studies (`lr`, `T`, `width`, `e`, `iters`, `N`, `d`), e.g.
# `ntkcheck study objectives --grid lr=1e-4,1e-2 --out runs/objectives-eta`; the spec files
# (`ntkcheck/apps/study/specs/objectives-small.toml`) run as plain sweeps too: `ntkcheck sweep --spec FILE`.
