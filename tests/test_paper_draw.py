"""``draw="paper"``: the authors' torch draws of the instances and of W_0 (ntkcheck/build/paper_draw.py), checked by the
facts their draw order implies, without their code: float32 values, unit-norm columns, Y = M x*, a scaled
orthogonal init with a zero last layer (so P ≡ 1 and k = 0 is GD with step 0.9999/β_i), determinism, the global
generator left alone, and ntkcheck's own default draws unchanged."""

from __future__ import annotations

import pytest
import torch

import ntkcheck
from ntkcheck.apps.sweep.batched import data_key
from ntkcheck.build import paper_draw
from ntkcheck.build.experiment import initial_weights, make_problem, setup
from ntkcheck.config import PRESETS, ConfigError, TrainConfig, hidden_widths, preset
from ntkcheck.models import init as inits
from ntkcheck.problems import qp as problems

TINY = dict(N=3, d=6, b=4, width=8, T=4, e=3.0, device="cpu")
PAPER = dict(TINY, draw="paper", seed=118, step_scale=0.9999)


def float32_exact(t: torch.Tensor) -> bool:
    return t.dtype == torch.float64 and torch.equal(t, t.float().double())


def test_the_official_presets_are_the_two_scales_in_the_authors_setting():
    for name, scale in (("small-official", "small"), ("paper-official", "paper")):
        cfg, base = preset(name), preset(scale)
        assert (cfg.draw, cfg.seed, cfg.dtype, cfg.step_scale, cfg.on_divergence) == (
            "paper", 118, "float32", 0.9999, "skip")
        assert cfg.replace(draw="ntkcheck", seed=0, dtype="float64", step_scale=1.0, on_divergence="stop") == base
    assert TrainConfig().draw == "ntkcheck" and all(PRESETS[k].get("draw", "ntkcheck") == "ntkcheck"
                                                    for k in ("small", "paper"))


def test_shapes_and_float32_draws():
    cfg = preset("small-official")
    p = paper_draw.problem(cfg)
    assert (p.M.shape, p.Y.shape, p.x_star.shape) == ((32, 25, 32), (32, 25), (32, 32))
    assert all(float32_exact(t) for t in (p.M, p.Y, p.x_star))
    W = paper_draw.weights(cfg)
    assert {k: tuple(v.shape) for k, v in W.items()} == {"W1": (2, 2), "W2": (2, 1024), "W3": (1024, 1)}
    assert all(float32_exact(v) for v in W.values())


def test_columns_have_unit_norm_and_every_system_is_consistent():
    p = paper_draw.problem(TrainConfig(**PAPER))
    torch.testing.assert_close(p.M.norm(dim=1), torch.ones(3, 6, dtype=torch.float64), rtol=0, atol=1e-6)
    # Y = M x* computed in float32, as theirs; in float64 the residual is float32 rounding only
    assert torch.equal(p.Y, (p.M.float() @ p.x_star.float()[..., None])[..., 0].double())
    assert problems.objective(p, p.x_star) < 1e-10
    torch.testing.assert_close(p.beta, problems.smoothness(p.M))


def test_the_init_is_e_times_orthogonal_with_a_zero_last_layer():
    cfg = TrainConfig(**PAPER | {"width": 16, "e": 100.0})
    W = paper_draw.weights(cfg)
    e2I = lambda k: cfg.e ** 2 * torch.eye(k, dtype=torch.float64)  # noqa: E731
    torch.testing.assert_close(W["W1"].T @ W["W1"], e2I(2), rtol=0, atol=1e-6 * cfg.e ** 2)  # square: orthogonal
    torch.testing.assert_close(W["W1"] @ W["W1"].T, e2I(2), rtol=0, atol=1e-6 * cfg.e ** 2)
    torch.testing.assert_close(W["W2"] @ W["W2"].T, e2I(2), rtol=0, atol=1e-6 * cfg.e ** 2)  # 2×n: orthonormal rows
    assert torch.equal(W["W3"], torch.zeros(16, 1, dtype=torch.float64))


def test_the_draw_order_is_torchs_own_init_on_the_seeded_global_generator():
    """The documented order, replayed with torch's own functions on the global generator (inside fork_rng): a
    seeded generator, Kaiming-uniform then orthogonal_ per inner layer, ×e; the data from seeds s+1 and s+2."""
    cfg = TrainConfig(**PAPER)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        expected = []
        for shape in inits.layer_shapes(hidden_widths(cfg.width, cfg.L))[:-1]:
            w = torch.nn.init.kaiming_uniform_(torch.empty(shape), mode="fan_in", nonlinearity="relu")
            expected.append(torch.nn.init.orthogonal_(w) * cfg.e)
        s = cfg.seed + paper_draw.TRAIN_OFFSET
        torch.manual_seed(s + 1)
        M = torch.randn(cfg.N, cfg.b, cfg.d)
        torch.manual_seed(s + 2)
        x_star = torch.randn(cfg.N, cfg.d)
    W, p = paper_draw.weights(cfg), paper_draw.problem(cfg)
    assert torch.equal(W["W1"], expected[0].double()) and torch.equal(W["W2"], expected[1].double())
    assert torch.equal(p.x_star, x_star.double())
    torch.testing.assert_close(p.M, (M / M.norm(dim=1, keepdim=True)).double(), rtol=1e-6, atol=0)


def test_the_untrained_model_is_gd_with_step_0_9999_over_beta():
    cfg = TrainConfig(**PAPER, dtype="float32")
    exp = setup(cfg)
    traj = exp.model.unroll(exp.problem, cfg.T)
    assert all(bool((P == 1).all()) for P in traj.P)
    gd = problems.gd_trajectory(exp.problem, cfg.T, step_scale=0.9999)
    for X, X_gd in zip(traj.X, gd):
        torch.testing.assert_close(X, X_gd)


def test_the_same_seed_gives_the_same_bits_and_another_seed_other_numbers():
    cfg = TrainConfig(**PAPER)
    a, b = paper_draw.problem(cfg), paper_draw.problem(cfg)
    assert torch.equal(a.M, b.M) and torch.equal(a.Y, b.Y)
    Wa, Wb = paper_draw.weights(cfg), paper_draw.weights(cfg)
    assert all(torch.equal(Wa[k], Wb[k]) for k in Wa)
    other = cfg.replace(seed=119)
    assert not torch.equal(paper_draw.problem(other).M, a.M)
    assert not torch.equal(paper_draw.weights(other)["W2"], Wa["W2"])
    reseeded = cfg.replace(init_seed=7)  # init_seed moves the weights only
    assert torch.equal(paper_draw.problem(reseeded).M, a.M)
    assert not torch.equal(paper_draw.weights(reseeded)["W2"], Wa["W2"])


def test_the_global_generator_is_left_alone():
    before = torch.get_rng_state()
    paper_draw.problem(TrainConfig(**PAPER))
    paper_draw.weights(TrainConfig(**PAPER))
    assert torch.equal(torch.get_rng_state(), before)


def test_the_test_batch_is_their_seed_plus_7777_with_32_instances():
    cfg = TrainConfig(**PAPER)
    test = paper_draw.problem(cfg, "test")
    assert test.N == paper_draw.TEST_SIZE == 32
    # the train set is drawn from seed + 777, the test batch from seed + 7777 = (seed + 7000) + 777
    assert torch.equal(test.M, paper_draw.problem(cfg.replace(seed=cfg.seed + 7000, N=32)).M)
    assert not torch.equal(test.M[:cfg.N], paper_draw.problem(cfg).M)
    with pytest.raises(ValueError, match="split"):
        paper_draw.problem(cfg, "validation")


def test_the_experiment_dispatches_on_draw_an_init_file_wins_and_a_problem_file_is_refused(tmp_path):
    cfg = TrainConfig(**PAPER)
    assert torch.equal(make_problem(cfg).M, paper_draw.problem(cfg).M)
    assert torch.equal(initial_weights(cfg)["W2"], paper_draw.weights(cfg)["W2"])
    theirs = problems.generate(2, 5, 3, seed=1)
    problems.save(theirs, tmp_path / "qp.npz")
    with pytest.raises(ConfigError, match="draws the authors' instances") as err:  # the draw is the instances
        cfg.replace(problem_file=str(tmp_path / "qp.npz"))
    assert err.value.field == "draw"
    weights = inits.deterministic(hidden_widths(cfg.width, cfg.L), 2.0, seed=4)
    torch.save(weights, tmp_path / "w.pt")
    assert torch.equal(initial_weights(cfg.replace(init_file=str(tmp_path / "w.pt")))["W2"], weights["W2"])


def test_the_default_draw_is_unchanged():
    cfg = TrainConfig(**TINY, seed=5)
    mine, reference = make_problem(cfg), problems.generate(cfg.N, cfg.d, cfg.b, 5, "train")
    assert all(torch.equal(getattr(mine, k), getattr(reference, k)) for k in ("M", "Y", "x_star", "beta"))
    W, W_ref = initial_weights(cfg), inits.deterministic(hidden_widths(cfg.width, cfg.L), cfg.e, 5)
    assert W.keys() == W_ref.keys() and all(torch.equal(W[k], W_ref[k]) for k in W)


def test_cells_drawn_differently_never_share_a_problem():
    cfg = TrainConfig(**TINY, seed=118)
    assert data_key(cfg) != data_key(cfg.replace(draw="paper"))


@pytest.mark.parametrize("change, words", [
    ({"draw": "numpy"}, "must be one of ntkcheck, paper"),
    ({"draw": "paper", "L": 4}, "L = 4"),
    ({"draw": "paper", "bias": True}, "bias = True"),
    ({"draw": "paper", "init": "deterministic-abs"}, "init = 'deterministic-abs'"),
])
def test_a_draw_the_authors_code_cannot_make_is_refused_naming_draw(change, words):
    with pytest.raises(ConfigError, match=words) as err:
        TrainConfig(**TINY | change)
    assert err.value.field == "draw"


def test_training_from_the_official_preset_runs():
    run = ntkcheck.train(preset("small-official", iters=3, device="cpu"))
    assert run.status == "completed" and list(run.metrics.index) == [0, 1, 2, 3]
    assert run.metrics["P_min"].iloc[0] == run.metrics["P_max"].iloc[0] == 1.0


def test_regression_values_of_seed_118():
    """Guards against changes of the implementation, it does not prove compatibility: these numbers came from
    running paper_draw itself (the documented order, facts 1–5 of its docstring) at the small-official preset,
    seed 118, on torch 2.13 (CPU). The tolerance allows a different last float32 bit from another BLAS/LAPACK."""
    cfg = preset("small-official")
    p, W = paper_draw.problem(cfg), paper_draw.weights(cfg)
    expect = lambda t, values, rtol: torch.testing.assert_close(  # noqa: E731
        t, torch.tensor(values, dtype=torch.float64), rtol=rtol, atol=0)
    expect(p.M[0, 0, :3], [-0.019074056297540665, -0.025538455694913864, 0.04675214737653732], 1e-6)
    expect(p.x_star[0, :3], [2.6112985610961914, 1.2778970003128052, -1.277032494544983], 0)
    expect(W["W1"], [[41.49239730834961, -27.899486541748047], [-27.899486541748047, -41.492393493652344]], 1e-5)
    expect(W["W2"][:, :2], [[-0.4233717918395996, -0.3357948958873749], [1.4705922603607178, 1.3350073099136353]],
           1e-5)
