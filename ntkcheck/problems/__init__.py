"""What is optimised: the paper's least-squares family (:mod:`.qp`) and the classical methods that solve it (:mod:`.solvers`: GD, NAG, Adam)."""
