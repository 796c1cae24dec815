"""The trainer: it lowers the loss, is deterministic, survives interruption, and records divergence."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from ntkcheck.config import ConfigError, TrainConfig
from ntkcheck.engine.training import train
from ntkcheck.problems import qp as problems
from ntkcheck.results.runfolder import Interrupted, to_long

TINY = dict(N=3, d=8, b=6, width=16, T=5, e=5.0, lr=1e-4, checkpoint_every=3)


def wide(result):
    return result.metrics


def test_training_lowers_the_objective_on_the_small_configuration(tmp_path):
    # The paper's small configuration (N=32, 32×25, n=1024, T=20, e=50, η=1e-7), a few iterations.
    result = train(TrainConfig(iters=4, dtype="float32"), tmp_path / "run")
    F = wide(result)["F_T"]
    assert result.status == "completed"
    assert (np.diff(F.to_numpy()) < 0).all(), F
    assert F.iloc[-1] < 0.9 * F.iloc[0]


def test_iteration_zero_is_gd_and_gain_is_measured_against_it(tmp_path):
    cfg = TrainConfig(**TINY, iters=3)
    m = wide(train(cfg, tmp_path / "run"))
    problem = problems.generate(cfg.N, cfg.d, cfg.b, cfg.seed)
    F_gd = float(problems.objective(problem, problems.gd_trajectory(problem, cfg.T)[-1]))
    assert m.loc[0, "F_T"] == pytest.approx(F_gd, rel=1e-14)
    assert m.loc[0, "gain"] == pytest.approx(0.0, abs=1e-14)
    np.testing.assert_allclose(m["gain"], (F_gd - m["F_T"]) / F_gd, rtol=1e-12, atol=1e-15)
    # P ≡ 1 at the deterministic initialisation, and inner-layer gradients vanish (W_L = 0).
    assert m.loc[0, "P_min"] == m.loc[0, "P_max"] == 1.0
    assert m.loc[0, "grad_norm/W1"] == 0.0 and m.loc[0, "grad_norm/W2"] == 0.0
    assert m.loc[0, "grad_norm/W3"] > 0


def test_sgd_update_and_drift_metrics_follow_their_definitions(tmp_path):
    """W_1 = W_0 − η∇W_0 for plain SGD, so ‖W_1 − W_0‖ = η‖∇W_0‖ in every layer."""
    cfg = TrainConfig(**TINY, iters=2, init="random")
    m = wide(train(cfg, tmp_path / "run"))
    for name in ("W1", "W2", "W3"):
        assert m.loc[0, f"drift/{name}"] == 0.0
        assert m.loc[1, f"drift/{name}"] == pytest.approx(cfg.lr * m.loc[0, f"grad_norm/{name}"], rel=1e-10)


def test_two_runs_with_one_seed_are_identical(tmp_path):
    cfg = TrainConfig(**TINY, iters=6, init="random")
    a, b = train(cfg, tmp_path / "a"), train(cfg, tmp_path / "b")
    pd.testing.assert_frame_equal(a.metrics, b.metrics)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_interrupt_and_resume_gives_the_uninterrupted_numbers(tmp_path, optimizer):
    cfg = TrainConfig(**TINY, iters=10, optimizer=optimizer)
    whole = train(cfg, tmp_path / "whole")

    def interrupt(k, metrics):
        if k == 4:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        train(cfg, tmp_path / "cut", callback=interrupt)
    assert not (tmp_path / "cut").exists() and (tmp_path / "cut.partial" / "checkpoint.pt").exists()
    resumed = train(cfg, tmp_path / "cut", resume=True)
    pd.testing.assert_frame_equal(whole.metrics, resumed.metrics)
    saved_whole = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=False)["params"]
    saved_cut = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)["params"]
    for name in saved_whole:
        assert torch.equal(saved_whole[name], saved_cut[name])


def test_resume_may_extend_the_number_of_iterations_but_not_change_the_model(tmp_path):
    cfg = TrainConfig(**TINY, iters=6)
    with pytest.raises(Interrupted):
        train(cfg, tmp_path / "run", callback=lambda k, m: (_ for _ in ()).throw(KeyboardInterrupt) if k == 2 else None)
    from ntkcheck.config import ConfigError

    with pytest.raises(ConfigError, match="^width: "):
        train(cfg.replace(width=32), tmp_path / "run", resume=True)
    longer = train(cfg.replace(iters=9), tmp_path / "run", resume=True)
    assert wide(longer).index.max() == 9


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_completed_run_continued_to_more_iterations_equals_the_longer_run(tmp_path, optimizer, monkeypatch):
    """A run killed after its last iteration but before its folder's rename, resumed with more iterations:
    iteration K, which the shorter run measured without a step, takes its step; the result is the longer run,
    bit for bit."""
    from ntkcheck.results import runfolder

    cfg = TrainConfig(**TINY, iters=7, optimizer=optimizer)
    whole = train(cfg, tmp_path / "whole")
    with monkeypatch.context() as m:
        m.setattr(runfolder, "finish", lambda work: work)  # everything written, the rename not done
        train(cfg.replace(iters=4), tmp_path / "run")
    (tmp_path / "run.partial" / runfolder.LOCK).unlink()  # the killed process's lock
    longer = train(cfg, tmp_path / "run", resume=True)
    pd.testing.assert_frame_equal(whole.metrics, longer.metrics)
    assert len((tmp_path / "run" / "metrics.parquet").read_bytes()) > 0
    for name, w in whole.weights.items():
        assert torch.equal(w, longer.weights[name])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_finished_run_continued_into_a_new_folder_equals_the_longer_run(tmp_path, optimizer):
    """continue_run: a finished 4-iteration run continued to 7 in a new folder is the 7-iteration run, bit for bit
    (metrics and weights), the finished folder is left byte for byte as it was, and a continuation interrupted
    half-way resumes to the same numbers."""
    from ntkcheck.engine.training import continue_run, resume_run

    cfg = TrainConfig(**TINY, iters=7, optimizer=optimizer)
    whole = train(cfg, tmp_path / "whole")
    train(cfg.replace(iters=4), tmp_path / "short")
    before = {p.name: p.read_bytes() for p in (tmp_path / "short").iterdir()}
    longer = continue_run(tmp_path / "short", tmp_path / "longer", iters=7)
    assert before == {p.name: p.read_bytes() for p in (tmp_path / "short").iterdir()}
    pd.testing.assert_frame_equal(whole.metrics, longer.metrics)
    for name, w in whole.weights.items():
        assert torch.equal(w, longer.weights[name])
    assert longer.config == cfg and longer.folder == tmp_path / "longer"

    def stop_at_5(k, metrics):
        if k == 5:
            raise KeyboardInterrupt
    with pytest.raises(Interrupted):
        continue_run(tmp_path / "short", tmp_path / "cut", iters=7, callback=stop_at_5)
    assert (tmp_path / "cut.partial" / "checkpoint.pt").is_file() and not (tmp_path / "cut").exists()
    resumed = resume_run(tmp_path / "cut")
    pd.testing.assert_frame_equal(whole.metrics, resumed.metrics)
    for name, w in whole.weights.items():
        assert torch.equal(w, resumed.weights[name])


def test_a_run_on_a_problem_given_in_python_continues_on_that_problem(tmp_path):
    """A run trained on a problem passed in Python continues on it when it is passed again."""
    from ntkcheck.engine.training import continue_run

    cfg = TrainConfig(**TINY, iters=5)
    p = problems.generate(cfg.N, cfg.d, cfg.b, seed=123)
    whole = train(cfg, tmp_path / "whole", problem=p)
    train(cfg.replace(iters=2), tmp_path / "short", problem=p)
    longer = continue_run(tmp_path / "short", tmp_path / "longer", problem=p, iters=5)
    pd.testing.assert_frame_equal(whole.metrics, longer.metrics)


def test_only_a_completed_run_continues_and_only_to_more_iterations(tmp_path):
    """continue_config refuses a folder that is not a finished run, a diverged run, iters ≤ K and a changed field
    outside the resumable ones, naming the parameter; nothing is written."""
    from ntkcheck.engine.training import continue_config, continue_run

    train(TrainConfig(**TINY, iters=3), tmp_path / "short")
    train(TrainConfig(**{**TINY, "lr": 1e300}, iters=4, init="random", on_divergence="stop"), tmp_path / "bad")
    for folder, changes, field in [(tmp_path, {"iters": 9}, "continue_from"),
                                   (tmp_path / "bad", {"iters": 9}, "continue_from"),
                                   (tmp_path / "short", {"iters": 3}, "iters"),
                                   (tmp_path / "short", {"iters": 9, "lr": 0.5}, "lr")]:
        with pytest.raises(ConfigError) as err:
            continue_config(folder, **changes)
        assert err.value.field == field
        with pytest.raises(ConfigError):
            continue_run(folder, tmp_path / "new", **changes)
        assert not (tmp_path / "new").exists() and not (tmp_path / "new.partial").exists()


def test_run_folder_layout(tmp_path):
    cfg = TrainConfig(**TINY, iters=2)
    result = train(cfg, tmp_path / "run")
    folder = tmp_path / "run"
    assert {p.name for p in folder.iterdir()} >= {"config.json", "metrics.parquet", "metrics.csv",
                                                  "checkpoint.pt", "report.json"}
    saved = json.loads((folder / "config.json").read_text())
    assert TrainConfig.from_dict(saved["config"]) == cfg
    assert "torch" in saved["versions"]
    on_disk = pd.read_parquet(folder / "metrics.parquet")
    pd.testing.assert_frame_equal(on_disk, to_long(result.metrics, "run"))
    assert list(on_disk.columns) == ["run_id", "iteration", "quantity", "value"]
    assert json.loads((folder / "report.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_divergence_is_recorded_not_raised(tmp_path, policy):
    # η = 1e300 sends the weights to ~1e300: the next backward pass overflows to Inf/NaN.
    cfg = TrainConfig(**{**TINY, "lr": 1e300}, iters=4, init="random", on_divergence=policy)
    result = train(cfg, tmp_path / "run")
    m = wide(result)
    first_bad = int(m.index[m["diverged"] > 0][0])
    assert first_bad >= 1
    if policy == "stop":
        assert result.status == "diverged" and m.index.max() == first_bad
    else:
        # every update is skipped from there on, so the run ends on a non-finite loss: diverged, not completed
        assert m.index.max() == cfg.iters and not np.isfinite(m["loss"].iloc[-1])
        assert result.status == "diverged"
        # a skipped update leaves the weights where they were, so every later iteration is the same
        assert (m.loc[first_bad:, "diverged"] == 1).all()
        assert m.loc[first_bad:, "drift/W3"].nunique() == 1
    assert json.loads((tmp_path / "run" / "report.json").read_text())["diverged_iterations"][0] == first_bad


def test_user_given_problem_and_weights_are_used_exactly(tmp_path):
    problem = problems.generate(2, 7, 5, seed=123)
    problems.save(problem, tmp_path / "qp.npz")
    from ntkcheck.models import init as inits

    weights = inits.random((2, 16), seed=9)
    torch.save(weights, tmp_path / "w.pt")
    cfg = TrainConfig(width=16, T=4, iters=1, problem_file=str(tmp_path / "qp.npz"), init_file=str(tmp_path / "w.pt"))
    result = train(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert (saved["N"], saved["d"], saved["b"]) == (2, 7, 5)
    from ntkcheck.models.math_l2o import build

    with torch.no_grad():
        X_T = build((2, 16), weights).unroll(problem, 4).X[-1]
    assert wide(result).loc[0, "F_T"] == pytest.approx(float(problems.objective(problem, X_T)), rel=1e-14)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_and_cpu_agree_in_float64(tmp_path):
    cfg = TrainConfig(**TINY, iters=3, init="random")
    cpu = wide(train(cfg.replace(device="cpu"), tmp_path / "cpu"))
    gpu = wide(train(cfg.replace(device="cuda"), tmp_path / "gpu"))
    np.testing.assert_allclose(gpu["F_T"], cpu["F_T"], rtol=1e-10)
