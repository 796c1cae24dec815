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
# # 7. The stability study: where training stops in η, against the theory's predictors
#
# **Question** (the paper's second open question). How tight are the derived bounds on η and e? Where is the
# real stability boundary, against Eq. 14 (η ≤ 1/𝓛 ≈ 1/λ_max(K_0)), its a-priori form 1/Λ̄₀², the linearised
# threshold 2/λ_max(K_0), the one-step freeze onset, and the Lemma 5.1–5.4 thresholds on e?
#
# **What the study did** (`ntkcheck study stability`, recorded in `results/studies/stability/`). Per group
# (e, T, width, seed), a bisection on a log scale for the largest η that *trains* — no divergence, no freeze
# (`froze_at_1` of `ntkcheck.results.outcomes`: step sizes saturated at the first recorded update and the loss flat
# within 1 % from there to K), a final gain over GD > 0 within K iterations. Round 0 trains both ends of the bracket; each later round the geometric
# midpoint of every open bracket, until η_fail/η_train < 1.25. Every round is an ordinary sweep in
# `sweeps/round-<r>/`. This notebook loads the record (nothing is retrained but one small bisection at the end).

# %%
import torch

torch.set_num_threads(1)

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import Image, Markdown, display

import ntkcheck
from ntkcheck import train
from ntkcheck.apps.study import load_study
from ntkcheck.apps.study import stability as S
from ntkcheck.results.outcomes import cell_outcome

sns.set_theme(style="whitegrid", context="notebook")
pd.set_option("display.width", 160)

FOLDER = Path(ntkcheck.__file__).resolve().parents[1] / "results" / "studies" / "stability"
result = load_study(FOLDER)
print(result)
display(Markdown(result.answer.paragraph))

# %% [markdown]
# ## The groups and their boundaries
#
# One row per group: `where` (found, above or below the bracket), η_train (the largest η measured to train),
# η_fail (the smallest measured not to), each predictor and the ratio measured/predicted.

# %%
table = result.answer.tables["boundaries"]
print(table["where"].value_counts().to_string())
table[["T", "width", "e", "seed", "where", "eta_train", "eta_fail", "gain_at_train", "ratio_stable",
       "ratio_eq14", "ratio_freeze", "closest"]].head(12)

# %% [markdown]
# Every found boundary is a measured crossing: the run at η_train trained and the run at η_fail did not, and
# they are within the resolution of each other (checked here from the round sweeps' cells).

# %%
measured = S.measurements(result.sweeps)
axes = [a for a in result.sweeps["round-0"].spec.axes if a != "lr"]
found = table[table["where"] == "found"]
runs = measured.set_index([*axes, "seed", "eta"])["trains"]
assert all(runs[(*row[axes], row["seed"], row["eta_train"])] for _, row in found.iterrows())
assert not any(runs[(*row[axes], row["seed"], row["eta_fail"])] for _, row in found.iterrows())
assert (found["eta_fail"] / found["eta_train"] < S.RESOLUTION).all()
print(f"{len(found)} found boundaries, each a crossing within {S.RESOLUTION}×; {len(measured)} runs in "
      f"{len(result.sweeps)} rounds")

# %% [markdown]
# ## Measured against predicted, per predictor
#
# The ratio η_train/η_pred per group (log scale): 1 is an exact prediction, above 1 the measured boundary lies
# above the prediction (for a sufficient condition such as Eq. 14: the bound is safe but loose).

# %%
ratios = found.melt(id_vars=["T", "width", "e", "seed"], value_vars=[f"ratio_{p}" for p in S.PREDICTORS],
                    var_name="predictor", value_name="ratio").dropna()
ratios["predictor"] = ratios["predictor"].str.removeprefix("ratio_").map(S.PREDICTORS)
ratios["T, width"] = ratios["T"].astype(str) + ", " + ratios["width"].astype(str)
fig, ax = plt.subplots(figsize=(9, 4))
sns.stripplot(data=ratios, x="ratio", y="predictor", hue="T, width", dodge=True, log_scale=True, ax=ax, size=4)
ax.axvline(1.0, color="k", lw=1)
ax.set(xlabel="η_train / η_predicted", ylabel="")
plt.show()
result.answer.tables["predictors"]

# %% [markdown]
# The recorded figure (drawn by the study from its `by_e` table): the measured boundary against each predictor
# over e, per (T, width), the seeds' spread as a band.

# %%
display(Image(filename=str(FOLDER / result.answer.figures[0])))
result.answer.tables["by_e"]

# %% [markdown]
# ## Going further (1): how much does the freeze criterion decide?
#
# "Froze" is ntkcheck's own criterion (a loss flat within 1 % after saturated step sizes at the first recorded
# update), not the paper's. The recorded cells can be reclassified at other tolerances without training anything:
# where the run at η_train still trains and the run at η_fail still does not, the found boundary does not depend
# on it.

# %%
S.freeze_sensitivity(result.sweeps, table, axes, tolerances=(1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 1e-4))

# %% [markdown]
# ## Going further (2): bisect your own predicate
#
# `S.bisect` is the study's bisection on any predicate η → bool. Here: the study's criterion on single training
# runs (`ntkcheck.train`, no sweep) for the first group of the record; the boundary comes out the same as the
# study's batched rounds.

# %%
first = found.iloc[0]
cell = measured.loc[(measured[[*axes, "seed"]] == first[[*axes, "seed"]]).all(axis=1), "cell"].iloc[0]
configs = {c.id: c.config for sweep in result.sweeps.values() for c in sweep.spec.cells()}  # each round's cells
cfg = configs[cell]  # the group's configuration (its η is the bisection's)
lo, hi = float(measured["eta"].min()), float(measured["eta"].max())


step = result.sweeps["round-0"].spec.record_step(cfg.iters)  # the sweep's curves: k = 0, step, 2·step, …, K


def trains_once(eta):
    run = train(cfg.replace(lr=eta))
    m = run.metrics
    m = m[(m.index % step == 0) | (m.index == m.index[-1])]  # the iterations a sweep records
    decided = cell_outcome(m, run.status)  # the sweep's outcome of this curve
    return decided["outcome"] == "trained" and not decided["froze_at_1"]


mine = S.bisect(trains_once, lo, hi)
print(f"single runs: η_train = {mine.eta_train:.6g}, η_fail = {mine.eta_fail:.6g} ({len(mine.measured)} runs); "
      f"the study: η_train = {first['eta_train']:.6g}, η_fail = {first['eta_fail']:.6g}")
assert math.isclose(mine.eta_train, first["eta_train"], rel_tol=1e-12)

# %% [markdown]
# To run the study on other axes or seeds (each one of `e`, `T`, `width`, `iters`, or the bracket `lr=η_lo,η_hi`):
#
# ```bash
# ntkcheck study stability --grid T=10,50 --seeds 0-9 --out my-stability      # resumable: rerun to continue
# ntkcheck sweep --spec ntkcheck/apps/study/specs/stability-small.toml        # round 0 alone, as a sweep
# ```
#
# or `ntkcheck.apps.study.study("stability", "my-stability", grid={"T": (10, 50)}, seeds="0-9")` from Python.
