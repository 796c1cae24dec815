"""The presets of Math-L2O's own synthetic settings (Liu et al., ICML 2023; MS4L2O): LASSO 250×500 with a 50-sparse
x*, logistic regression + λ‖x‖₁ on 1000 samples of 50 features with a 20-sparse x*, λ = 0.1."""

from __future__ import annotations

import numpy as np
import pytest

from ntkcheck import ConfigError, preset, train
from ntkcheck.build.experiment import make_problem


@pytest.mark.parametrize("name, problem, b, d, nonzeros", [("lasso-ms4l2o", "lasso", 250, 500, 50),
                                                            ("logistic-ms4l2o", "logistic", 1000, 50, 20)])
def test_the_ms4l2o_presets_draw_their_papers_shapes_and_sparsity(name, problem, b, d, nonzeros):
    cfg = preset(name, N=2)
    assert (cfg.problem, cfg.update, cfg.lam, cfg.lam_scale) == (problem, "prox", 0.1, "absolute")
    data = make_problem(cfg)
    assert tuple(data.M.shape) == (2, b, d)
    x_star = data.x_star.numpy()
    assert list(np.count_nonzero(x_star, axis=1)) == [nonzeros, nonzeros]
    assert np.allclose(data.lam.numpy(), 0.1)


def test_logistic_takes_more_samples_than_features_and_least_squares_does_not():
    assert preset("small", problem="logistic", update="prox", b=40, d=8).b == 40
    for problem in ("qp", "lasso"):
        with pytest.raises(ConfigError, match="b ≤ d") as err:
            preset("small", problem=problem, update="prox" if problem == "lasso" else "gd", b=40, d=8)
        assert err.value.field == "b"


@pytest.mark.parametrize("name", ["lasso-ms4l2o", "logistic-ms4l2o"])
def test_an_ms4l2o_preset_trains_from_its_classical_method(name):
    """W_L = 0: the untrained learner is proximal gradient exactly (gain 0 at k = 0), and F* lies below every F."""
    run = train(preset(name, N=2, width=64, iters=3))
    assert abs(run.metrics["gain"].iloc[0]) <= 1e-12
    assert run.summary["F_star"] <= run.metrics["F_T"].min() + 1e-9
