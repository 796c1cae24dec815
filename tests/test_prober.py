"""The engine's prober (:mod:`ntkcheck.engine.prober`), the one behind ``verify`` and the sweep: at W_k it is
:func:`ntkcheck.measure` plus the drift against K_0 computed here from its definition; the diagnostics at W_0 run for
the MLP only; and a verify and a one-cell sweep of the same configuration give the same probe rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ntkcheck.apps.sweep import make_spec, sweep
from ntkcheck.apps.verify import verify
from ntkcheck.build.experiment import build_model, make_problem
from ntkcheck.config import ProbeConfig, TrainConfig
from ntkcheck.engine.prober import FREEZE_NOTE, Prober
from ntkcheck.engine.training import train
from ntkcheck.instruments.diagnostics import at_initialisation
from ntkcheck.instruments.probes import ProbeFailure, measure
from ntkcheck.results import schema

TINY = dict(N=3, d=8, b=6, width=16, T=4, e=5.0, lr=1e-3, iters=5)
LSTM = dict(N=2, d=6, b=4, T=3, iters=3, model="lstm", lstm_hidden=4, lr=1e-2)


def _weights_along(cfg: TrainConfig) -> dict[int, dict]:
    """W_0..W_K of the single run, from its probe hook."""
    seen = {}
    train(cfg, probe=lambda k, m: seen.setdefault(k, {n: p.detach().clone() for n, p in m.named_parameters()}))
    return seen


def _drift(K0: np.ndarray, K: np.ndarray) -> tuple[float, float]:
    """‖K − K_0‖_F/‖K_0‖_F and 1 − ⟨K_0, K⟩/(‖K_0‖_F ‖K‖_F), written out as sums of squares."""
    n0, n = math.sqrt(float((K0 ** 2).sum())), math.sqrt(float((K ** 2).sum()))
    return math.sqrt(float(((K - K0) ** 2).sum())) / n0, 1.0 - float((K0 * K).sum()) / (n0 * n)


@pytest.mark.parametrize("fields", [TINY, LSTM], ids=["mlp", "lstm"])
def test_the_prober_at_k_is_measure_at_W_k_plus_the_drift_against_K0(fields):
    cfg = TrainConfig(**fields)
    problem = make_problem(cfg)
    W = _weights_along(cfg)
    prober = Prober(cfg, problem, method="dense")
    for k in (0, 2, cfg.iters):
        model = build_model(cfg, W[k])
        got = prober(k, model)
        ref = measure(model, problem, cfg.T, lr=cfg.lr, method="dense", kernels=True)
        K0 = measure(build_model(cfg, W[0]), problem, cfg.T, lr=cfg.lr, method="dense", kernels=True).kernels[0]
        assert got.k == k and got.result.kernels is None and np.array_equal(got.K, ref.kernels[0])
        # the rest is measure's, bit for bit (the reason quotes the memory available at the call, which moves)
        same = lambda d: {k: v for k, v in d.items() if k != "method_reason"}  # noqa: E731
        assert same(got.result.replace(drift=None).as_dict()) == same(ref.as_dict())
        rel, distance = _drift(K0, ref.kernels[0])
        assert got.result.drift.rel_change == pytest.approx(rel, rel=1e-12, abs=1e-15)
        assert got.result.drift.distance == pytest.approx(distance, abs=1e-13)
        assert np.array_equal(prober.K0, K0)  # set by the probe at k = 0
    assert prober(0, build_model(cfg, W[0])).result.drift.rel_change == 0.0


def test_a_prober_given_K0_continues_the_drift_of_the_one_that_measured_it():
    """As a resumed verify does with probes/K0.npy, and a sweep cell with the K_0 it keeps."""
    cfg = TrainConfig(**TINY)
    problem, W = make_problem(cfg), _weights_along(cfg)
    first = Prober(cfg, problem, method="dense")
    first(0, build_model(cfg, W[0]))
    late = build_model(cfg, W[cfg.iters])
    again = Prober(cfg, problem, method="dense", K0=first.K0)(cfg.iters, late).result
    assert again.drift == first(cfg.iters, late).result.drift and again.drift.rel_change > 0


def test_lanczos_has_no_kernel_so_no_drift_and_no_K0():
    cfg = TrainConfig(**TINY)
    prober = Prober(cfg, make_problem(cfg), method="lanczos")
    probe = prober(0, build_model(cfg))
    assert probe.result.method == "lanczos" and probe.K is None and probe.result.drift is None and prober.K0 is None


def test_a_zero_K0_gives_no_drift_and_overflowing_weights_a_failure_with_its_reason():
    cfg = TrainConfig(**TINY)
    problem = make_problem(cfg)
    zero = Prober(cfg, problem, method="dense", K0=np.zeros((cfg.N * cfg.b,) * 2))
    assert zero(3, build_model(cfg)).result.drift is None
    bad = {n: torch.full_like(w, math.inf) for n, w in build_model(cfg).state_dict().items()}
    failed = Prober(cfg, problem, method="dense")(3, build_model(cfg, bad))
    assert isinstance(failed.result, ProbeFailure) and "not finite" in failed.result.error and failed.K is None


def test_the_diagnostics_run_for_the_mlp_at_its_deterministic_initialisation_only():
    cfg = TrainConfig(**TINY)
    problem = make_problem(cfg)
    model = build_model(cfg)
    found = Prober(cfg, problem).diagnose(model)
    assert found.skipped is None and found.error is None
    assert found.found == at_initialisation(model, problem, cfg.T, lr=cfg.lr, loss=cfg.loss, tol=cfg.saturation_tol)
    assert set(Prober(cfg, problem).diagnose(model, best=False).found) == {"freeze", "dead_cone"}
    adam = TrainConfig(**TINY, optimizer="adam")
    assert Prober(adam, problem).diagnose(model, best=False).found["freeze"]["note"] == FREEZE_NOTE
    random = TrainConfig(**TINY, init="random")
    skipped = Prober(random, problem).diagnose(build_model(random))
    assert skipped.found == {} and "deterministic" in skipped.skipped
    lstm = TrainConfig(**LSTM)
    skipped = Prober(lstm, make_problem(lstm)).diagnose(build_model(lstm))
    assert skipped.found == {} and "model lstm" in skipped.skipped


@pytest.mark.parametrize("fields", [TINY, LSTM], ids=["mlp", "lstm"])
def test_verify_and_a_one_cell_sweep_give_the_same_probe_rows(fields):
    """The sweep's probe rows at k = 0 and k = K equal verify's probes read through the same schema, bit for bit:
    the same prober at the same weights (a one-cell batch steps as the single run does)."""
    cfg = TrainConfig(**fields)
    checked = verify(cfg, ProbeConfig(ntk_every=0, ntk_method="dense", early=3), figures=False)
    spec = make_spec("small", base=fields, seeds=[cfg.seed], probe_at=(0, "K"), probe_method="dense")
    assert [c.config for c in spec.cells()] == [cfg]
    swept = sweep(spec)
    assert len(swept.cells) == 1 and swept.cells.status.iloc[0] == "completed"
    rows = swept.probes.set_index("iteration")
    for k in (0, cfg.iters):
        want = schema.sweep_row(checked.probes[k].as_dict())
        want.pop("features_drift_rel")  # the sweep's own column: its probes keep G_0 (tests/test_features_drift.py)
        got = {name: rows.loc[k, name] for name in want}
        assert got.keys() == want.keys()
        for name, value in want.items():
            assert (value is None and (got[name] is None or np.isnan(got[name]))) or got[name] == value \
                or (np.isnan(value) and np.isnan(got[name])), (k, name, got[name], value)
    assert rows.loc[0, "drift_rel"] == 0.0 and checked.metrics.loc[0, "ntk/drift/rel_change"] == 0.0
