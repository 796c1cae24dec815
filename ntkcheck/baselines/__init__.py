"""Baselines of the paper's comparisons, on the same problems as Math-L2O (:mod:`ntkcheck.problems`).

- :mod:`.classical`: GD (step s/β_i), Nesterov's accelerated GD, Adam and the paper's Adam grid.
- :mod:`.math_l2o`: Liu et al. (ICML 2023) Math-L2O, a coordinate-wise LSTM with P (and A) heads.
- :mod:`.lista`: LISTA-CPSS (Chen et al. 2018) and the linear weight-only variant the paper runs on QP.
- :mod:`.learned`: training (full or truncated BPTT) and long-horizon inference of any learned optimiser.
"""

from ntkcheck.baselines.classical import Curve, adam, adam_grid, gd, grid_summary, nag
from ntkcheck.baselines.learned import Fit, evaluate, fit
from ntkcheck.baselines.lista import LISTACPSS, weight_only
from ntkcheck.baselines.math_l2o import MathL2OLSTM

__all__ = ["Curve", "Fit", "LISTACPSS", "MathL2OLSTM", "adam", "adam_grid", "evaluate", "fit", "gd",
           "grid_summary", "nag", "weight_only"]
