"""Sweeps: grids of configurations over seeds, trained in batches (a leading cell axis) or as Ray tasks."""

from ntkcheck.apps.sweep.run import ENGINES, SweepResult, load_sweep, sweep, sweep_spec
from ntkcheck.apps.sweep.spec import Cell, SweepSpec, load_spec, make_spec

__all__ = ["ENGINES", "Cell", "SweepResult", "SweepSpec", "load_spec", "load_sweep", "make_spec", "sweep",
           "sweep_spec"]
