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
# # 8. The width study: does the NTK regime arrive as the width grows?
#
# **Question** (the paper's third open question, and its NTK premise). Thm 4.3 needs the iterates to stay where the
# wide layer's features stay well-conditioned, and says a width O(N·d) suffices. NTK theory (Jacot et al. 2018;
# Lee et al. 2019) predicts that at a fixed step relative to the kernel the kernel moves less as the width n grows,
# ‖K_k − K_0‖_F/‖K_0‖_F = O(n^(−1/2)), and that training then follows its linearisation. Does it here, at what rate,
# and how must n grow with N·d?
#
# **What the study did** (`ntkcheck study width`, recorded in `results/studies/width/`). One sweep: widths
# 16…2048 at N·d = 8, and N·d ∈ {4, 8, 20, 40} at n = 64 and 1024, under the paper's deterministic initialisation
# and the standard Gaussian one, 5 seeds each. Every cell steps at η = 0.5/λ_max(K_0) (its own kernel), trains the
# real unroll and its first-order Taylor model from the same W_0 (the sweep's `linearised = true`), and is probed
# densely at k = 0 and K. This notebook loads the record; nothing is retrained but one small study at the end.

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
from ntkcheck.apps.study import load_study, study
from ntkcheck.apps.study import width as W
from ntkcheck.apps.study.fits import power_fit

sns.set_theme(style="whitegrid", context="notebook")
pd.set_option("display.width", 160)

FOLDER = Path(ntkcheck.__file__).resolve().parents[1] / "results" / "studies" / "width"
result = load_study(FOLDER)
display(Markdown(result.answer.paragraph))

# %% [markdown]
# ## The cells
#
# One row per cell: its η·λ_max(K_0) (0.5 by construction, to the 4 digits η is recorded with), status, and the
# quantities at K. A cell that did not complete is left out of the medians and fits.

# %%
cells = result.answer.tables["cells"]
assert np.allclose(cells["eta_lambda"], W.ETA_FRACTION, rtol=1e-3)
print(cells["status"].value_counts().to_string())
cells[["init", "nd", "width", "seed", "lr", "drift_K", "features_drift_K", "linearised_gap_final", "rank_0",
       "rank_K", "sigma_min_nonzero_K", "gain"]].head(10)

# %% [markdown]
# ## The figure and the exponents
#
# The figure is drawn from the `summary` (medians and quartiles over seeds) and `exponents` tables; each exponent is
# the least-squares slope of log q on log n over every completed cell, with a 95 % percentile-bootstrap interval
# over seeds.

# %%
display(Image(filename=str(FOLDER / result.answer.figures[0])))
fits = result.answer.tables["exponents"]
fits[fits["against"] == "width"][["init", "nd", "quantity", "exponent", "low", "high", "points", "seeds"]]

# %% [markdown]
# The drift's exponent recomputed from the sweep's own files (its probes at K, not the study's tables), with
# another bootstrap seed: the same slope, and an interval that moves only in its last digits.

# %%
sweep = result.sweeps["width"]
at_K = sweep.probes.merge(sweep.cells[["cell", "iters", "init", "N", "d", "width", "sweep_seed", "status"]],
                          on="cell")
at_K = at_K[(at_K["iteration"] == at_K["iters"]) & (at_K["status"] == "completed")]
nd = W.fixed_nd(result.answer.tables["summary"])
for init, part in at_K[at_K["N"] * at_K["d"] == nd].groupby("init"):
    again = power_fit(part["width"], part["drift_rel"], part["sweep_seed"], rng=123)
    table = fits[(fits["against"] == "width") & (fits["init"] == init) & (fits["nd"] == nd)
                 & (fits["quantity"] == "drift_K")].iloc[0]
    assert np.isclose(again.exponent, table["exponent"], rtol=1e-12)
    print(f"{init}: n^{again.exponent:.3f} [{again.low:.3f}, {again.high:.3f}] (table: "
          f"[{table['low']:.3f}, {table['high']:.3f}]); NTK theory: n^{W.NTK_EXPONENT}")

# %% [markdown]
# ## The real and the linearised loss along training
#
# The sweep's curves hold both: `loss` (the real run's training loss L_k) and `loss_linearised` (its Taylor model's
# L^lin_k), at the recorded iterations. Here the median over seeds of their ratio, at the smallest and the largest
# width.

# %%
curves = sweep.curves.merge(sweep.cells[["cell", "init", "N", "d", "width", "status"]], on="cell")
curves = curves[(curves["N"] * curves["d"] == nd) & (curves["status"] == "completed")]
curves = curves[curves["width"].isin([curves["width"].min(), curves["width"].max()])]
curves = curves.assign(ratio=curves["loss"] / curves["loss_linearised"])
fig, ax = plt.subplots(figsize=(7, 3.5))
sns.lineplot(data=curves, x="iteration", y="ratio", hue="width", style="init", estimator="median",
             errorbar=("pi", 50), ax=ax)
ax.axhline(1.0, color="black", lw=0.8, ls=":")
ax.set_ylabel("L_k / L^lin_k (median, IQR)")
ax.set_title(f"real over linearised training loss, N·d = {nd}")
plt.show()

# %% [markdown]
# ## Going further
#
# Every axis of the study can be overridden (`--grid FIELD=V1,V2` on the command line, `grid=` here): e.g. a wider
# range of widths, more iterations, another init scale e. A tiny one here (two widths, Gaussian init, two seeds, 20
# iterations) runs in seconds; the same call with the defaults is the recorded study.

# %%
import tempfile

small = study("width", Path(tempfile.mkdtemp()) / "width", seeds="0-1",
              grid={"init": ("gaussian",), "width": (32, 256), "N": (2,), "iters": (20,)}, threads=1)
small.answer.tables["summary"][["init", "nd", "width", "completed", "drift_K_median", "features_drift_K_median",
                                "linearised_gap_final_median"]]
