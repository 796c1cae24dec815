"""``--model lstm``: Liu et al.'s coordinate-wise LSTM through the application path (issue 21): the configuration and
its refusals, the model built from the seed, ``ntkcheck ntk`` and ``ntkcheck verify`` end to end, the conditions of the
MLP marked "does not apply", training and resume bit for bit, the trainer against the baselines' loop
(:func:`ntkcheck.engine.learned.fit`), and the memory estimate against its pieces, all in float64.

The references are independent of the code under test: the LSTM built directly (``MathL2OLSTM(seed=…)``), a dense
``torch.func.jacrev`` of the residual for K, ``fit``'s own loop for training, torch's own parameter count, and the
bytes the autograd graph saves (``saved_tensors_hooks``) for the estimate.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call, jacrev

import bounds
from ntkcheck import resources
from ntkcheck.build.experiment import build_model, initial_weights, make_problem, setup
from ntkcheck.cli import main
from ntkcheck.config import ConfigError, ProbeConfig, TrainConfig
from ntkcheck.engine.learned import fit
from ntkcheck.engine.training import train
from ntkcheck.models.lstm import MathL2OLSTM
from ntkcheck.problems import qp as problems
from ntkcheck.results.runfolder import Interrupted
from ntkcheck.theory import MLP_QUANTITIES, evaluate_conditions, not_applicable

LSTM = dict(N=2, d=6, b=4, T=3, model="lstm", lstm_hidden=4, lr=1e-2, iters=4, checkpoint_every=1)
SIZES = ["--N", "2", "--d", "6", "--b", "4", "--T", "3", "--model", "lstm", "--lstm-hidden", "4"]
APPLY = ("gd.rate", "gd.rate_s", "step.range", "step.descent", "eq14.eta", "thm4_3.rate_ntk")  # to any learner


def residual(model, problem, T, W):
    """r(W) = vec(M Y_T(W) − Y) of the LSTM ``model`` (detach=False: the true map) with the weights W."""
    X_T = functional_call(model, W, (problem, T)).X[-1]
    return (torch.einsum("nbd,nd->nb", problem.M, X_T) - problem.Y).reshape(-1)


# -- configuration ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "field"), [
    ({"model": "rnn"}, "model"), ({"lstm_variant": "X"}, "lstm_variant"), ({"lstm_hidden": 0}, "lstm_hidden"),
    ({"lstm_layers": 0}, "lstm_layers"), ({"lstm_hidden": 2.5}, "lstm_hidden"),
    ({"wide_layer": "angular"}, "wide_layer"), ({"wide_layer": "dense"}, "wide_layer"),
    ({"init": "random"}, "init"), ({"bias": True}, "bias"), ({"init_file": "w.pt"}, "init_file"),
    ({"draw": "paper"}, "draw"),
])
def test_lstm_settings_that_make_no_sense_are_refused_naming_the_field(changes, field):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**(LSTM | changes))
    assert info.value.field == field and info.value.message


def test_the_mlp_ignores_the_lstm_settings_and_keeps_its_defaults():
    assert TrainConfig().model == "mlp" and TrainConfig(lstm_variant="PA", lstm_hidden=7).model == "mlp"
    assert not_applicable(TrainConfig()) == {}


def test_the_lstm_weights_and_state_are_drawn_from_the_weights_seed():
    cfg = TrainConfig(**LSTM, seed=3, init_seed=11, lstm_variant="PA", lstm_layers=1, step_scale=0.5)
    reference = MathL2OLSTM("PA", hidden=4, layers=1, step_scale=0.5, seed=11)
    model = build_model(cfg, device=torch.device("cpu"))
    assert isinstance(model, MathL2OLSTM) and model.state_seed == 11 and model.step_scale == 0.5
    for (name, p), (name_r, q) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        assert name == name_r and torch.equal(p, q)
    assert initial_weights(cfg).keys() == reference.state_dict().keys()
    assert build_model(cfg, dtype=torch.float32, device=torch.device("cpu")).heads["P"].weight.dtype == torch.float32
    problem = make_problem(cfg)
    torch.testing.assert_close(model.unroll(problem, 3).X[-1], reference.unroll(problem, 3).X[-1], rtol=0, atol=0)


def test_a_model_handed_in_must_be_the_lstm_the_config_describes():
    cfg = TrainConfig(**LSTM)
    assert setup(cfg, model=MathL2OLSTM(hidden=4, seed=0)).model.hidden == 4
    for wrong in (MathL2OLSTM(hidden=5, seed=0), MathL2OLSTM(hidden=4, seed=1), MathL2OLSTM("PA", hidden=4)):
        with pytest.raises(ConfigError) as info:
            setup(cfg, model=wrong)
        assert info.value.field == "model"
    with pytest.raises(ConfigError):  # and the MLP config refuses the LSTM
        setup(TrainConfig(N=2, d=6, b=4, width=8, T=3), model=MathL2OLSTM(hidden=4))


def test_verify_refuses_the_structured_jacobian_for_the_lstm(tmp_path):
    from ntkcheck.apps.verify import verify

    with pytest.raises(ConfigError) as info:
        verify(TrainConfig(**LSTM), ProbeConfig(jacobian="structured"), tmp_path / "run")
    assert info.value.field == "jacobian" and not (tmp_path / "run.partial").exists()


# -- the conditions ---------------------------------------------------------------------------------------


def test_does_not_apply_marks_only_the_mlp_conditions_and_changes_no_other_verdict():
    """On the same quantities, the LSTM's scope marks exactly the conditions that need an MLP quantity (or are the
    MLP's statement); every other row is the unscoped row, verdict and note alike."""
    q = {"N": 2, "d": 6, "b": 4, "n": 64, "L": 3, "T": 3, "e": 2.0, "eta": 1e-3, "step_scale": 1.0, "F0": 0.5,
         "F_k": np.array([0.5, 0.4]), "P_min": 0.9, "P_max": 1.1, "Theta_L": 0.1, "alpha0": 0.3, "delta3": 1.0,
         "lambda_max": 10.0, "lambda_min": 0.1} | bounds.gd_quantities(*_data(), T=3)
    plain = evaluate_conditions(q)
    scope = not_applicable(TrainConfig(**LSTM, lstm_variant="PA"))
    scoped = evaluate_conditions(q, scope)
    assert [r["key"] for r in plain] == [r["key"] for r in scoped] and all(r["applies"] for r in plain)
    for row, before in zip(scoped, plain):
        mlp = set(row["needs"]) & set(MLP_QUANTITIES) or row["key"] in ("init.gd_equality", "step.descent")
        if mlp:
            assert row["applies"] is False and row["holds"] is None and row["note"].startswith("does not apply: ")
        else:
            assert row == before
    assert {r["key"] for r in scoped if r["applies"]} == set(APPLY) - {"step.descent"}  # PA: the accelerator


def _data():
    p = problems.generate(2, 6, 4, 0)
    return p.M.numpy(), p.Y.numpy()


# -- the commands -----------------------------------------------------------------------------------------


def test_ntk_of_the_lstm_writes_its_report_and_K_is_the_dense_jacobian_gram(tmp_path, capsys):
    out = tmp_path / "ntk"
    assert main(["ntk", *SIZES, "--lstm-variant", "PA", "--json", "--out", str(out)]) == 0, capsys.readouterr().err
    report = json.loads((out / "ntk.json").read_text())
    init = report["points"]["init"]
    assert init["alpha"] is None and "wide layer" in init["not_applicable"]["alpha"] and init["delta3"] is None
    assert any("LSTM" in note for note in report["notes"])
    cfg = TrainConfig(**LSTM, lstm_variant="PA")
    model = MathL2OLSTM("PA", hidden=4, seed=0, detach=False)
    problem = problems.generate(2, 6, 4, 0)
    W = {k: v.detach() for k, v in model.named_parameters()}
    J = torch.cat([j.reshape(8, -1) for j in jacrev(lambda w: residual(model, problem, cfg.T, w))(W).values()], 1)
    lam = torch.linalg.eigvalsh(J @ J.T)
    assert init["n_params"] == J.shape[1] == resources.lstm_parameters("PA", 4, 2)
    assert abs(init["K"]["lambda_max"] - float(lam[-1])) <= 1e-10 * float(lam[-1])
    assert abs(init["K"]["lambda_min"] - float(lam[0])) <= 1e-10 * float(lam[-1])
    assert json.loads(capsys.readouterr().out)["points"]["init"]["alpha"] is None


def test_ntk_refuses_the_structured_jacobian_for_the_lstm(tmp_path, capsys):
    assert main(["ntk", *SIZES, "--method", "structured", "--out", str(tmp_path / "ntk")]) == 2
    assert "--method" in capsys.readouterr().err


def test_verify_of_the_lstm_writes_its_report_with_the_mlp_conditions_not_applying(tmp_path, capsys):
    out = tmp_path / "verify"
    argv = ["verify", *SIZES, "--lr", "1e-2", "--iters", "3", "--ntk-every", "1", "--strict", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    rows = {r["key"]: r for r in report["conditions"]}
    for key, row in rows.items():
        if set(row["needs"]) & {"alpha0", "delta3", "n", "e", "L", "Theta_L"}:
            assert row["applies"] is False and row["note"].startswith("does not apply: "), key
    for key in APPLY:
        assert rows[key]["applies"] is True and rows[key]["holds"] is not None, key
    assert rows["init.gd_equality"]["applies"] is False
    assert report["config"]["model"] == "lstm" and report["diagnostics"] == {}
    assert all(p["alpha"] is None for p in report["probe_points"].values())
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert "active_share" not in set(metrics["quantity"]) and not metrics["quantity"].str.startswith("alpha/").any()
    markdown = (out / "report.md").read_text()
    assert "does not apply" in markdown and "n/a (" in markdown and "model=lstm" in markdown
    for name in ("loss", "spectrum", "probes", "e_eta"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 0
    # the probes' λ_max at k = 0 is the run's, and the run's F(X_T) at k = 0 is the untrained LSTM's
    model, problem = MathL2OLSTM(hidden=4, seed=0), problems.generate(2, 6, 4, 0)
    with torch.no_grad():
        F0 = float(problems.objective(problem, model.unroll(problem, 3).X[-1]))
    assert report["summary"]["F_T_initial"] == pytest.approx(F0, rel=1e-14)


# -- training ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_lstm_training_interrupted_and_resumed_equals_the_uninterrupted_run(tmp_path, optimizer):
    cfg = TrainConfig(**LSTM, lstm_variant="PA", optimizer=optimizer)
    whole = train(cfg, tmp_path / "whole")

    def stop_at_2(k, metrics):
        if k == 2:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        train(cfg, tmp_path / "run", callback=stop_at_2)
    resumed = train(cfg, tmp_path / "run", resume=True)
    pd.testing.assert_frame_equal(resumed.metrics, whole.metrics, check_exact=True)
    assert resumed.weights.keys() == whole.weights.keys()
    assert all(torch.equal(resumed.weights[k], whole.weights[k]) for k in whole.weights)
    assert resumed.model().state_dict().keys() == whole.weights.keys()
    assert "active_share" not in whole.metrics and "drift/heads.A.weight" in whole.metrics
    assert (whole.metrics["drift/heads.P.weight"].iloc[1:] > 0).all()  # it trains


@pytest.mark.parametrize("loss", ["last", "mean"])
def test_lstm_training_equals_the_baselines_loop(loss):
    """``train`` and :func:`ntkcheck.engine.learned.fit` run the same meta-iteration (unroll, loss, backward,
    optimiser step) on the same model and problem: the same weights, losses and F(X_T) to 1e-12 (bit for bit here)."""
    cfg = TrainConfig(**LSTM, loss=loss, optimizer="adam")
    result = train(cfg)
    model = MathL2OLSTM(hidden=4, seed=0)
    ref = fit(model, make_problem(cfg), cfg.T, lr=cfg.lr, iters=cfg.iters, optimizer="adam", loss=loss)
    for k, v in model.state_dict().items():
        assert torch.linalg.norm(result.weights[k] - v) <= 1e-12 * torch.linalg.norm(v), k
    for column in ("loss", "F_T", "gain"):
        np.testing.assert_allclose(result.metrics[column], ref.metrics[column], rtol=1e-12, atol=0)
    assert not torch.equal(result.weights["heads.P.bias"], result.W0["heads.P.bias"])


# -- the memory estimate ----------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(variant=st.sampled_from(["P", "PA"]), hidden=st.integers(1, 24), layers=st.integers(1, 3))
def test_the_lstm_parameter_count_is_the_modules(variant, hidden, layers):
    model = MathL2OLSTM(variant, hidden=hidden, layers=layers)
    assert resources.lstm_parameters(variant, hidden, layers) == sum(p.numel() for p in model.parameters())


@settings(max_examples=10, deadline=None)
@given(variant=st.sampled_from(["P", "PA"]), hidden=st.integers(1, 24), layers=st.integers(1, 3),
       N=st.integers(1, 4), d=st.integers(2, 24), T=st.integers(1, 4))
def test_the_unroll_term_holds_what_the_graph_saves(variant, hidden, layers, N, d, T):
    """The estimate's unroll term bounds the bytes of every storage the autograd graph of the unroll saves."""
    cfg = TrainConfig(N=N, d=d, b=1, T=T, model="lstm", lstm_variant=variant, lstm_hidden=hidden, lstm_layers=layers)
    model, problem = build_model(cfg, device=torch.device("cpu")), make_problem(cfg)
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.unroll(problem, T)
    term = next(t for t in resources.estimate(cfg).terms if t.name == "unroll")
    assert sum(saved.values()) <= term.bytes


def test_the_lstm_estimate_grows_with_its_sizes_and_names_them():
    base = TrainConfig(**LSTM)
    for field in ("lstm_hidden", "lstm_layers", "T", "N", "d"):
        totals = [resources.estimate(base.replace(**{field: getattr(base, field) * k}), ProbeConfig()).total_bytes
                  for k in (1, 4, 16)]
        assert totals[0] < totals[1] < totals[2], field
    with pytest.raises(resources.MemoryLimitError) as info:
        resources.check(base.replace(lstm_hidden=4096), limit=1e8)
    assert info.value.field == "lstm_hidden"
    assert resources.estimate(base).total_bytes == resources.estimate(base.replace(width=10**6, e=7.0)).total_bytes


@pytest.mark.slow
@pytest.mark.parametrize(("config", "probes"), [
    (dict(N=32, d=64, b=25, T=20, iters=1, model="lstm"), None),
    (dict(N=4, d=32, b=16, T=10, iters=1, model="lstm"), dict(ntk_every=0, ntk_method="dense")),
], ids=["train", "verify-dense"])
def test_the_lstm_estimate_bounds_the_measured_peak_within_about_2x(config, probes):
    from test_resources import measured_peak

    measured = measured_peak(config, probes)
    est = resources.estimate(TrainConfig(**config), None if probes is None else ProbeConfig(**probes))
    assert measured <= est.total_bytes <= 2.2 * measured, (measured, est)
