"""The one trainer (ntkcheck.engine.trainer): truncated BPTT against a plain loop written out here, several cells
against each run alone, and the divergence policy applied per cell, all in float64."""

from __future__ import annotations

import math

import pytest
import torch

from ntkcheck.build.experiment import build_model, initial_weights, make_problem
from ntkcheck.config import preset
from ntkcheck.engine.learned import fit
from ntkcheck.engine.trainer import iteration, new_state
from ntkcheck.models.lstm import MathL2OLSTM
from ntkcheck.problems.meta import gd_objective, objective

CFG = preset("small", N=3, d=5, b=4, width=24, T=6, iters=5, device="cpu")


def _segmented_by_hand(model, problem, T: int, S: int, lr: float, iters: int) -> list[float]:
    """Liu et al.'s truncated BPTT written out: per iteration, segments of S steps from the detached end of the last
    one, each with loss F(X_end of segment), backward and an SGD step W ← W − η∇W (all but the last iteration)."""
    params = list(model.parameters())
    losses = []
    for k in range(iters + 1):
        X0, state, seg = None, None, []
        for start in range(0, T, S):
            for p in params:
                p.grad = None
            traj = model.unroll(problem, min(S, T - start), X0=X0, state=state)
            loss = objective(problem, traj.X[-1])
            loss.backward()
            seg.append(float(loss))
            if k < iters:
                with torch.no_grad():
                    for p in params:
                        p -= lr * p.grad
            X0, state = traj.X[-1].detach(), traj.state.detach()
        losses.append(sum(seg) / len(seg))
    return losses


def test_truncated_bptt_is_the_plain_segmented_loop():
    problem = make_problem(CFG)
    a, b = MathL2OLSTM(seed=1).double(), MathL2OLSTM(seed=1).double()
    found = fit(a, problem, 6, lr=1e-3, iters=4, truncation=2)
    expected = _segmented_by_hand(b, problem, 6, 2, 1e-3, 4)
    assert found.status == "completed"
    torch.testing.assert_close(torch.tensor(found.metrics["loss"].to_list()), torch.tensor(expected),
                               rtol=1e-12, atol=0)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-15, msg=name)


def _cells(lrs: list[float], K: int):
    model = build_model(CFG, device="cpu")
    return model, [new_state({k: v.clone().requires_grad_() for k, v in initial_weights(CFG.replace(e=e)).items()},
                             optimizer="sgd", lr=lr, K=K) for e, lr in zip((1.0, 3.0, 5.0), lrs)]


def test_several_cells_at_once_are_each_cell_alone():
    problem = make_problem(CFG)
    F_gd = gd_objective(problem, CFG.T)
    model, together = _cells([1e-2, 1e-3, 2e-2], CFG.iters)
    _, alone = _cells([1e-2, 1e-3, 2e-2], CFG.iters)
    for k in range(CFG.iters + 1):
        both = iteration(k, together, model, problem, F_gd, T=CFG.T, loss="mean", record=[True] * 3,
                         saturation_tol=1e-2)
        each = [iteration(k, [s], model, problem, F_gd, T=CFG.T, loss="mean", record=[True], saturation_tol=1e-2)[0]
                for s in alone]
        for x, y in zip(both, each):
            assert math.isclose(x.loss, y.loss, rel_tol=1e-12)
            assert x.metrics.keys() == y.metrics.keys()
            for key in x.metrics:
                assert math.isclose(x.metrics[key], y.metrics[key], rel_tol=1e-10, abs_tol=1e-14), key
    for s, t in zip(together, alone):
        for name in s.weights:
            torch.testing.assert_close(s.weights[name], t.weights[name], rtol=1e-12, atol=1e-15)


def test_a_cell_that_diverges_ends_alone_and_the_others_go_on():
    """An infinite η overflows one cell at its second iteration: it is diverged at that iteration with no step taken; the other
    cells of the batch are unaffected (their numbers are those of their runs alone)."""
    problem = make_problem(CFG.replace(e=20.0))
    F_gd = gd_objective(problem, CFG.T)
    model, cells = _cells([1e-3, math.inf, 1e-3], CFG.iters)
    _, alone = _cells([1e-3, math.inf, 1e-3], CFG.iters)
    k = 0
    while cells[1].status == "running":
        before = {n: w.detach().clone() for n, w in cells[1].weights.items()}
        out = iteration(k, cells, model, problem, F_gd, T=CFG.T, loss="last", record=[False] * 3, saturation_tol=1e-2)
        for s in (alone[0], alone[2]):
            iteration(k, [s], model, problem, F_gd, T=CFG.T, loss="last", record=[False], saturation_tol=1e-2)
        k += 1
    assert cells[1].status == "diverged" and not out[1].finite and out[1].metrics["diverged"] == 1.0
    for n in before:  # no step from a non-finite iteration
        torch.testing.assert_close(cells[1].weights[n].detach(), before[n], rtol=0, atol=0, equal_nan=True)
    assert cells[0].status == cells[2].status == "running"
    for s, t in ((cells[0], alone[0]), (cells[2], alone[2])):
        for name in s.weights:
            torch.testing.assert_close(s.weights[name], t.weights[name], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("problem,update", [("qp", "gd"), ("qp", "nag"), ("lasso", "gd"), ("lasso", "prox"),
                                            ("lasso", "fista"), ("logistic", "nag"), ("logistic", "fista")])
def test_the_untrained_learner_gains_nothing_over_its_backbones_classical_method(problem, update):
    """W_L = 0 (the deterministic initialisation) makes P ≡ 1, so at k = 0 the learner is the classical method of its
    backbone, which the gains are measured against: gain and gain_mean 0 to rounding, and F* (a certified optimum)
    below F(X_T) at every iteration."""
    from ntkcheck.engine.training import train

    run = train(CFG.replace(problem=problem, update=update, iters=1))
    first = run.metrics.iloc[0]
    assert abs(first["gain"]) <= 1e-12 and abs(first["gain_mean"]) <= 1e-12
    assert run.summary["reference"] == update
    assert 0 <= run.summary["F_star"] <= run.metrics["F_T"].min() + 1e-12


def test_verify_outside_the_theorem_measures_everything_and_says_what_does_not_apply():
    """LASSO with the prox backbone: each condition applies exactly where its declared setting covers the run (the
    step range, the width and α₀ are statements about the model alone and get verdicts; the others, derived for least
    squares with gd, say so with the run's setting named), the least-squares predictions are one 'does not apply'
    row, and the measured quantities are still there."""
    import bounds
    import ntkcheck
    from ntkcheck.config import ProbeConfig

    result = ntkcheck.verify(CFG.replace(problem="lasso", update="prox", iters=4),
                             ProbeConfig(ntk_every=0, ntk_method="dense"))
    conditions = {c["key"]: c for c in result.report["conditions"]}
    general = {c.key for c in bounds.registry() if c.setting.problems is None and c.setting.updates is None}
    assert general == {"step.range", "width.nd", "thm4_3.alpha0"} and conditions.keys() == {c.key for c in
                                                                                              bounds.registry()}
    for key, c in conditions.items():
        if key in general:
            assert c["applies"] and c["holds"] is not None, key
        else:
            assert not c["applies"] and "problem lasso with update prox" in c["note"] and "least squares" in c["note"]
    assert conditions["step.range"]["holds"] is True
    verdicts = {r["what"]: r["verdict"] for r in result.report["comparisons"]}
    assert verdicts["loss along training"] == "does not apply"
    decided = [r["what"] for r in result.report["comparisons"] if r["verdict"] in ("agrees", "differs")]
    assert len(decided) == 1 and "by linearised training" in decided[0]  # the one prediction that still applies
