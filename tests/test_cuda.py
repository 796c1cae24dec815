"""The CUDA path against the CPU path, in float64: X_T, the gradients, K, the angular wide layer, a batched sweep,
and no host synchronisation inside the unrolled loop. Skipped where CUDA is absent; `benchmarks/gpu_check.sh`
runs this file on a GPU machine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ntkcheck import empirical_ntk, preset, train
from ntkcheck.apps.sweep import make_spec, sweep
from ntkcheck.build.experiment import setup
from ntkcheck.engine.training import training_loss

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
SMALL = dict(N=4, d=12, b=8, width=64, T=6, e=5.0, lr=1e-3)


def _both(**changes):
    cfg = preset("small", **SMALL, **changes)
    return setup(cfg.replace(device="cpu")), setup(cfg.replace(device="cuda"))


@pytest.mark.parametrize("wide_layer", ["angular", "dense"])
def test_unroll_and_gradients_agree_with_the_cpu(wide_layer):
    cpu, gpu = _both(init="random", wide_layer=wide_layer)
    for x in (cpu, gpu):
        traj = x.model.unroll(x.problem, x.config.T)
        training_loss(x.problem, traj, "last").backward()
        x.X_T = traj.X[-1].detach()
    np.testing.assert_allclose(gpu.X_T.cpu().numpy(), cpu.X_T.numpy(), rtol=1e-12, atol=1e-14)
    for (name, p), (_, q) in zip(cpu.model.named_parameters(), gpu.model.named_parameters()):
        np.testing.assert_allclose(q.grad.cpu().numpy(), p.grad.numpy(), rtol=1e-10, atol=1e-14, err_msg=name)


def test_the_ntk_agrees_with_the_cpu():
    cpu, gpu = _both(init="random")
    K_cpu = empirical_ntk(cpu.model, cpu.problem, cpu.config.T).K
    K_gpu = empirical_ntk(gpu.model, gpu.problem, gpu.config.T).K
    np.testing.assert_allclose(K_gpu.cpu().numpy(), K_cpu.cpu().numpy(), rtol=1e-10, atol=1e-12 * float(K_cpu.abs().max()))


def test_training_and_a_batched_sweep_agree_with_the_cpu():
    cfg = preset("small", **SMALL, iters=3)
    a, b = train(cfg.replace(device="cpu")).metrics, train(cfg.replace(device="cuda")).metrics
    np.testing.assert_allclose(b["F_T"], a["F_T"], rtol=1e-10)
    spec = dict(base=SMALL | {"iters": 3}, grid={"e": (5.0, 25.0)}, seeds="0-1", probe_method="none")
    on_cpu = sweep(make_spec("small", **spec | {"base": spec["base"] | {"device": "cpu"}}))
    on_gpu = sweep(make_spec("small", **spec | {"base": spec["base"] | {"device": "cuda"}}))
    np.testing.assert_allclose(on_gpu.cells["gain_final"], on_cpu.cells["gain_final"], rtol=1e-10)


def test_the_unrolled_loop_never_waits_for_the_host():
    _, gpu = _both()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any device→host copy inside the loop raises
    try:
        traj = gpu.model.unroll(gpu.problem, gpu.config.T, record_active=True)
        loss = training_loss(gpu.problem, traj, "last")
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item()


@pytest.mark.parametrize("setting", [dict(problem="qp", update="nag"), dict(problem="lasso", update="prox"),
                                     dict(problem="lasso", update="fista"), dict(problem="logistic", update="prox"),
                                     dict(model="lstm"), dict(init="gaussian")])
def test_training_beyond_the_theorem_agrees_with_the_cpu(setting):
    """Every objective, backbone and learner trains on CUDA as on the CPU (float64, a few iterations)."""
    cfg = preset("small", **SMALL, iters=3, optimizer="adam", **setting)
    a, b = train(cfg.replace(device="cpu")).metrics, train(cfg.replace(device="cuda")).metrics
    np.testing.assert_allclose(b["F_T"], a["F_T"], rtol=1e-10)
    np.testing.assert_allclose(b["gain"], a["gain"], rtol=1e-8, atol=1e-12)


def test_linearised_training_agrees_with_the_cpu():
    from ntkcheck.engine.linearised import train_linearised

    cpu, gpu = _both(init="random")
    curves = [train_linearised(x.model, x.problem, x.config.T, lr=1e-3, iters=3) for x in (cpu, gpu)]
    np.testing.assert_allclose(np.asarray(curves[1].loss), np.asarray(curves[0].loss), rtol=1e-10)
