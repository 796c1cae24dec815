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
# # 5. The init study: is the deterministic initialisation necessary?
#
# **Question** (the paper's first open question). Math-L2O's theorem starts from a deterministic initialisation
# with W_L = 0 and an expansion e; its Fig. 2 shows randomly initialised learners exploding at the first iteration for
# long horizons. Do the standard random initialisations (Gaussian N(0, 1/fan_in), Xavier, He) train as well, and
# where do they fail?
#
# **What the study did** (`ntkcheck study init`, recorded in `results/studies/init/`). One sweep: five
# initialisations × T ∈ {5, 10, 20, 50, 100} × η ∈ {1e-4, 1e-2, 1} over 20 seeds, 100 SGD iterations on a tiny
# problem (N = 4, d = 8, b = 6, width 64), probed at W_0. Every run's outcome comes from its whole curve
# (`ntkcheck.results.outcomes`: trained, froze, unstable, diverged). This notebook loads the record; nothing is
# retrained but a tiny variation at the end.

# %%
import torch

torch.set_num_threads(1)

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Image, Markdown, display

import ntkcheck
from ntkcheck.apps.study import load_study, study
from ntkcheck.results.outcomes import COLUMNS, add_outcomes

sns.set_theme(style="whitegrid", context="notebook")
pd.set_option("display.width", 160)

FOLDER = Path(ntkcheck.__file__).resolve().parents[1] / "results" / "studies" / "init"
result = load_study(FOLDER)
display(Markdown(result.answer.paragraph))

# %% [markdown]
# ## The rates per (init, T, η)
#
# Each rate comes with its 95 % Clopper–Pearson interval over the 20 seeds. The longest horizon first:

# %%
table = result.answer.tables["init"]
cols = ["init", "T", "lr", "n", "trained", "trained_lo", "trained_hi", "froze", "unstable", "diverged",
        "grad_norm_0", "gain_final", "alpha_0", "dead_share_0"]
table[table["T"] == table["T"].max()][cols]

# %%
display(Image(filename=str(FOLDER / result.answer.figures[0])))

# %% [markdown]
# ## Checked against the sweep's own files
#
# The outcomes of the study's table were written by the sweep as each cell ended. Recomputed here from the curves
# alone (`add_outcomes` on cells without those columns), they agree cell for cell; and ‖∇W‖ at k = 0 is the norm of
# the per-layer gradient norms of the curves' first row.

# %%
sweep = result.sweeps["init"]
again = add_outcomes(sweep.cells.drop(columns=list(COLUMNS)), sweep.curves)
assert (again["outcome"] == sweep.cells["outcome"]).all()
first = sweep.curves[sweep.curves["iteration"] == 0].set_index("cell")
layers = [c for c in first.columns if c.startswith("grad_norm/")]
norms = np.sqrt((first[layers] ** 2).sum(axis=1))
cells = result.answer.tables["init_cells"].set_index("cell")
assert np.allclose(norms.loc[cells.index], cells["grad_norm_0"])
pd.crosstab([cells["init"], cells["T"]], cells["outcome"])

# %% [markdown]
# ## Whole curves: how far below GD do the failing runs go?
#
# The final gain hides long excursions; `min_gain` and `share_below_gd` summarise the whole curve. The failing runs
# of each initialisation, by horizon:

# %%
failing = cells[cells["outcome"] != "trained"]
fig, ax = plt.subplots(figsize=(7, 3.5))
sns.stripplot(data=failing, x="T", y="share_below_gd", hue="init", dodge=True, ax=ax)
ax.set_ylabel("share of recorded iterations below GD")
ax.set_title("failing runs (froze, unstable, diverged)")
plt.show()
failing.groupby(["init", "outcome"])["min_gain"].describe()[["count", "min", "50%", "max"]]

# %% [markdown]
# ## Going further
#
# Any axis of the study can be overridden (`--grid FIELD=V1,V2`, here `T` and `lr`), with other seeds; the study
# then runs into a new folder. A tiny variation (two seeds, T = 3, one η, 10 runs):

# %%
tiny = study("init", Path(tempfile.mkdtemp()) / "init", seeds="0-1", grid=["T=3", "lr=1e-3"], threads=1)
tiny.answer.tables["init"][["init", "T", "lr", "n", "trained", "grad_norm_0", "gain_final"]]
