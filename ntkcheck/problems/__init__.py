"""What is optimised: the paper's least-squares family (:mod:`.qp`), the LASSO (:mod:`.lasso`) and logistic regression
(:mod:`.logistic`) beyond it, the classical methods and reference optima (:mod:`.solvers`), and the meta-problem of
learning to optimise (:mod:`.meta`)."""
