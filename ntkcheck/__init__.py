"""ntkcheck: measure the quantities of the Math-L2O NTK convergence proof on real training runs."""
