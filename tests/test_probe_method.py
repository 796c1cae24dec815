"""Which kernel method a probe runs, and why (issue 12): ``auto`` forms K whenever the dense kernels and Jacobians
fit in memory, Lanczos stops after a budget of matrix-free products (on a kernel of low rank its bottom can take
many times the N·b products that forming K column by column takes), and ``method_reason`` records it all."""

import math

import numpy as np
import pytest
import torch
from scipy.sparse.linalg import LinearOperator

import ntkcheck.instruments.probes as probes
from ntkcheck import ProbeConfig, TrainConfig, build_model, make_problem, verify
from ntkcheck.config import DENSE_MAX
from ntkcheck.instruments.probes import ProbeResult, measure
from ntkcheck.resources import kernel_method

# bias and random init: every layer is active and K has a moderate rank with a spread spectrum, so Lanczos needs
# 400–900 products for λ_min of K where N·b = 100 (measured; 42 suffice at the deterministic init)
LOW_RANK = TrainConfig(N=10, d=12, b=10, width=16, T=5, e=5.0, bias=True, init="random", lr=1e-3, iters=1)
GB = 1e9


def test_auto_is_dense_whenever_the_kernels_fit_not_only_up_to_4000_outputs():
    Q = 2 * DENSE_MAX  # 8000 outputs: 8·20·Q² = 10 GB of kernels
    assert kernel_method("auto", Q, memory=64 * GB) == "dense"
    assert kernel_method("auto", Q, memory=8 * GB) == "lanczos"
    # the Jacobians count too: Q × P float64 twice
    assert kernel_method("auto", 1000, 10, memory=2 * 8 * (20 * 1000 ** 2 + 2 * 1000 * 10)) == "dense"
    assert kernel_method("auto", 1000, 10 ** 7, memory=2 * 8 * (20 * 1000 ** 2 + 2 * 1000 * 10)) == "lanczos"
    method, reason = kernel_method("auto", Q, memory=8 * GB, explain=True)
    assert method == "lanczos" and "10.2 GB" in reason and "half of the 8 GB" in reason
    for asked in ("dense", "lanczos"):
        assert kernel_method(asked, 10 ** 6, memory=1.0) == asked
    assert kernel_method("auto", 100) in ("dense", "lanczos")  # the machine's own memory, read without raising


def counted_operators(monkeypatch):
    """Count the matrix-free products of every operator the probes build."""
    counts = []
    original = probes.ntk_operator

    def wrapped(*args, **kwargs):
        op, n = original(*args, **kwargs), [0]
        counts.append(n)

        def count(f):
            def apply(v):
                n[0] += 1
                return f(v)
            return apply
        return LinearOperator(op.shape, matvec=count(op.matvec), rmatvec=count(op.rmatvec), dtype=np.float64)

    monkeypatch.setattr(probes, "ntk_operator", wrapped)
    return counts


@pytest.fixture(scope="module")
def low_rank():
    torch.manual_seed(0)
    return build_model(LOW_RANK, dtype=torch.float64), make_problem(LOW_RANK)


def test_lanczos_stops_at_its_budget_and_falls_back_to_the_dense_kernel(low_rank, monkeypatch):
    model, p = low_rank
    dense = measure(model, p, LOW_RANK.T, lr=LOW_RANK.lr, method="dense")
    counts = counted_operators(monkeypatch)
    r = measure(model, p, LOW_RANK.T, lr=LOW_RANK.lr, method="lanczos")
    assert [n[0] for n in counts] == [120]  # max(N·b, 120) on K, then K and K̃ are formed
    assert r.method == "dense" and "budget" in r.method_reason and "lanczos as asked" in r.method_reason
    assert r.K.lambda_max == pytest.approx(dense.K.lambda_max, rel=1e-12)
    assert r.K.rank.rank == dense.K.rank.rank


def test_where_the_dense_kernels_do_not_fit_lanczos_reports_what_converged(low_rank, monkeypatch):
    model, p = low_rank
    dense = measure(model, p, LOW_RANK.T, lr=LOW_RANK.lr, method="dense")
    counts = counted_operators(monkeypatch)
    r = measure(model, p, LOW_RANK.T, lr=LOW_RANK.lr, method="auto", memory=1e5, lanczos_budget=60)
    assert r.method == "lanczos" and "auto → lanczos" in r.method_reason and "do not fit" in r.method_reason
    assert all(n[0] <= 2 * 60 for n in counts)  # the budget, then one more for λ_max alone
    assert "K 60 + " in r.method_reason and "λ_min is reported as NaN" in r.method_reason
    assert r.K.lambda_max == pytest.approx(dense.K.lambda_max, rel=1e-8)  # the top converges in about 21 products
    assert math.isnan(r.K.lambda_min) and math.isnan(r.K.abs_accuracy_min)
    back = ProbeResult.from_dict(r.as_dict(), r.arrays())
    assert back.method_reason == r.method_reason and math.isnan(back.K.lambda_min)


def test_lanczos_within_its_budget_is_unchanged_and_counts_its_products(monkeypatch):
    cfg = TrainConfig(N=3, d=8, b=6, width=16, T=5, e=5.0, lr=1e-3, iters=1)
    model, p = build_model(cfg, dtype=torch.float64), make_problem(cfg)
    counts = counted_operators(monkeypatch)
    r = measure(model, p, cfg.T, lr=cfg.lr, method="lanczos")
    assert r.method == "lanczos"
    spent = [n[0] for n in counts]
    assert spent == [38, 38] and "K 38, K̃ 38 (budget 120 per kernel)" in r.method_reason


def test_the_report_carries_the_method_and_its_reason():
    run = verify(TrainConfig(N=3, d=8, b=6, width=16, T=5, e=5.0, lr=1e-3, iters=2), ProbeConfig(ntk_every=0),
                 figures=False)
    for point in run.report["probe_points"].values():
        assert point["method"] == "dense" and "auto" in point["method_reason"] and "available" in point["method_reason"]
    old = {k: v for k, v in run.probes[0].as_dict().items() if k != "method_reason"}  # a probe file from before
    assert ProbeResult.from_dict(old, run.probes[0].arrays()).method_reason == ""
