"""The one-step freeze predictor (ntkcheck.freeze) of every cell of this sweep with e ≥ 25, beside the cell's outcome.

    python results/sweep-fig5-20seeds/freeze.py          # writes freeze.csv beside this file (about 2 min, one core)

For each (e, η, seed): max|φ'| of the first SGD step from W_L = 0, the share of step sizes it saturates, the gain of
the state it lands in, and ‖∇W‖ at that state over ‖∇W‖ at W_0; then the cell's outcome over its whole recorded
curve (ntkcheck.results.outcomes) and its final gain at K = 300.
"""

from pathlib import Path

import pandas as pd
import torch

import ntkcheck
from ntkcheck.build.experiment import setup
from ntkcheck.results.outcomes import add_outcomes

HERE = Path(__file__).parent
torch.set_num_threads(1)
cells = add_outcomes(pd.read_parquet(HERE / "cells.parquet"), pd.read_parquet(HERE / "curves.parquet"))
rows = []
for _, cell in cells[cells.e >= 25].iterrows():
    x = setup(ntkcheck.preset("small", e=float(cell.e), lr=float(cell.lr), seed=int(cell.seed)))
    f = ntkcheck.freeze(x.model, x.problem, x.config.T, lr=x.config.lr)
    rows.append({"e": cell.e, "lr": cell.lr, "seed": int(cell.seed), "phi_max": f.phi_max, "c": f.c,
                 "saturated": f.saturated, "gain_landing": f.gain_landing,
                 "grad_ratio_landing": f.grad_norm_landing / f.grad_norm, "outcome": cell.outcome,
                 "froze_at_1": bool(cell.froze_at_1), "min_gain": cell.min_gain, "gain_final": cell.gain_final})
pd.DataFrame(rows).to_csv(HERE / "freeze.csv", index=False)
