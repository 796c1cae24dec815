"""The public API: a notebook's whole workflow from top-level imports, in memory; every exported name documented;
library errors that name config fields, never command-line flags."""

import inspect
import math
import os

import numpy as np
import torch
import pytest

import bounds
import ntkcheck

SMALL = dict(N=4, d=8, b=6, width=16, T=5, e=5.0, device="cpu")


def test_a_notebook_workflow_from_top_level_imports_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = ntkcheck.TrainConfig(**SMALL, iters=50)
    problem, model = ntkcheck.make_problem(cfg), ntkcheck.build_model(cfg)
    at_init = ntkcheck.measure(model, problem, cfg.T, lr=cfg.lr)
    cfg = cfg.replace(lr=0.5 * at_init.linearised.threshold)  # η = half of 2/λ_max(K_0): stable
    W0 = {k: v.detach().clone() for k, v in model.named_parameters()}
    run = ntkcheck.train(cfg, problem=problem, model=model)
    assert os.listdir(tmp_path) == []  # in memory: no file, no folder
    assert all(torch.equal(v, W0[k]) for k, v in model.named_parameters())  # the caller's model is not trained
    assert any(not torch.equal(run.weights[k], W0[k]) for k in W0)
    assert run.folder is None and run.status == "completed" and list(run.metrics.index) == list(range(51))

    # K = J Jᵀ at the trained weights: N·b × N·b, symmetric, PSD up to rounding
    K = ntkcheck.empirical_ntk(run.model(), problem, cfg.T).K.numpy()
    assert K.shape == (cfg.N * cfg.b, cfg.N * cfg.b)
    np.testing.assert_allclose(K, K.T, rtol=0, atol=1e-12 * np.abs(K).max())
    assert np.linalg.eigvalsh(K).min() >= -cfg.N * cfg.b * np.finfo(float).eps * np.abs(K).max()

    # α₀ = σ_min(G_{L−1,T}) at W_0: the wide layer sees 2-D inputs, so its rank stays below n and α₀ is zero
    # to working precision (reported as computed, with the tolerance)
    a = ntkcheck.alpha(ntkcheck.build_model(cfg), problem, cfg.T)
    assert a.rank.rank < min(a.shape) and a.alpha <= a.rank.tol
    assert at_init.alpha.alpha == a.alpha

    # the theory on the measured numbers: Thm 4.3 needs α₀ > 0, which fails here
    q = bounds.gd_quantities(problem.M.numpy(), problem.Y.numpy(), cfg.T, cfg.step_scale) | {
        "alpha0": a.alpha, "alpha0_tol": a.rank.tol, "alpha0_rank": a.rank.rank, "n": cfg.width}
    assert bounds.get("thm4_3.alpha0").evaluate(q).holds is False

    # trained: below GD (computed independently, in numpy, by bounds), and iteration 0 is GD itself
    F_gd = bounds.gd_quantities(problem.M.numpy(), problem.Y.numpy(), cfg.T, cfg.step_scale)["F_gd_T"]
    assert run.metrics["F_T"].iloc[0] == pytest.approx(F_gd, rel=1e-12)
    assert run.metrics["F_T"].iloc[-1] < F_gd


def test_verify_in_memory_gives_the_numbers_of_a_verify_with_a_folder(tmp_path):
    cfg = ntkcheck.TrainConfig(**SMALL, lr=1e-3, iters=6)
    probes = ntkcheck.ProbeConfig(ntk_every=3, early=4)
    memory = ntkcheck.verify(cfg, probes)
    disk = ntkcheck.verify(cfg, probes, tmp_path / "v", figures=False)
    assert memory.folder is None and disk.folder == tmp_path / "v"
    assert memory.metrics.equals(disk.metrics)
    assert [c["value"] for c in memory.report["conditions"]] == [c["value"] for c in disk.report["conditions"]]
    assert memory.probes[6].K.lambda_max == disk.probes[6].K.lambda_max


def test_a_run_read_back_from_its_folder_equals_the_run_in_memory(tmp_path):
    cfg = ntkcheck.TrainConfig(**SMALL, lr=1e-3, iters=4)
    memory = ntkcheck.train(cfg)
    ntkcheck.train(cfg, tmp_path / "run")
    back = ntkcheck.load_run(tmp_path / "run")
    assert back.metrics.equals(memory.metrics) and back.config == memory.config
    assert all(np.array_equal(back.weights[k], memory.weights[k]) for k in memory.weights)


def test_presets_are_the_defaults_and_overrides_apply():
    assert ntkcheck.preset("small") == ntkcheck.TrainConfig()
    assert ntkcheck.probe_preset("small") == ntkcheck.ProbeConfig()
    paper = ntkcheck.preset("paper", iters=10)
    assert (paper.N, paper.d, paper.b, paper.width, paper.T, paper.e, paper.iters) == (10, 512, 400, 5120, 100, 100.0, 10)


def _own_doc(obj) -> str:
    doc = obj.__doc__ or ""
    # a dataclass without a docstring gets its signature as __doc__
    return "" if inspect.isclass(obj) and doc.startswith(f"{obj.__name__}(") else doc.strip()


@pytest.mark.parametrize("module", [ntkcheck, bounds], ids=["ntkcheck", "bounds"])
def test_every_exported_name_has_a_docstring(module):
    assert module.__all__ and module.__doc__
    for name in module.__all__:
        assert _own_doc(getattr(module, name)), f"{module.__name__}.{name} has no docstring"


def _errors(tmp_path):
    """Bad input to the library, one case per kind of check."""
    cfg = ntkcheck.TrainConfig(**SMALL, iters=2)
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "report.json").write_text("{}")  # a folder that holds something is never written into
    yield "width", lambda: ntkcheck.TrainConfig(width=0)
    yield "b", lambda: ntkcheck.TrainConfig(b=40)
    yield "lr", lambda: ntkcheck.TrainConfig(lr=math.nan)
    yield "step_scale", lambda: ntkcheck.TrainConfig(step_scale=2.5)
    yield "wide_layer", lambda: ntkcheck.TrainConfig(wide_layer="angular", bias=True)
    yield "on_divergence", lambda: ntkcheck.TrainConfig(on_divergence="ignore")
    yield "early", lambda: ntkcheck.ProbeConfig(early=1)
    yield "ntk_method", lambda: ntkcheck.ProbeConfig(ntk_method="exact")
    yield "preset", lambda: ntkcheck.preset("huge")
    yield "iter", lambda: ntkcheck.preset("small", iter=3)
    yield "problem_file", lambda: ntkcheck.make_problem(cfg.replace(problem_file=str(tmp_path / "none.npz")))
    yield "init_file", lambda: ntkcheck.build_model(cfg.replace(init_file=str(tmp_path / "none.pt")))
    yield "model", lambda: ntkcheck.train(cfg, model=ntkcheck.build_model(cfg.replace(width=8)))
    yield "resume", lambda: ntkcheck.train(cfg, resume=True)
    yield "resume", lambda: ntkcheck.train(cfg, tmp_path / "nothing", resume=True)
    yield "out", lambda: ntkcheck.train(cfg, tmp_path / "done")
    yield "resume", lambda: ntkcheck.verify(cfg, resume=True)
    yield "t", lambda: ntkcheck.kernel_report(cfg, t=cfg.T + 1)
    yield "run", lambda: ntkcheck.load_run(tmp_path / "nothing")


def test_library_errors_name_the_field_and_never_a_command_line_flag(tmp_path):
    for field, call in _errors(tmp_path):
        with pytest.raises(ntkcheck.ConfigError) as info:
            call()
        assert info.value.field == field, (field, str(info.value))
        assert str(info.value).startswith(f"{field}: ")
        assert "--" not in str(info.value), str(info.value)


def test_every_config_field_maps_to_a_flag_of_the_command_that_sets_it():
    """The CLI prints a library error as ``--<flag>``: that flag must exist on verify (which takes every field)."""
    import typer.main

    from ntkcheck.cli import app, flag

    command = typer.main.get_command(app).commands["verify"]
    opts = {o for p in command.params for o in p.opts + p.secondary_opts}
    fields = set(ntkcheck.TrainConfig.__dataclass_fields__) | set(ntkcheck.ProbeConfig.__dataclass_fields__)
    for field in fields:
        if field in ("bias", "detach"):  # flags: --bias/--no-bias
            assert f"--{field}" in opts
            continue
        assert flag(field) in opts, field


def test_verify_builds_the_problem_and_the_model_once(monkeypatch):
    from ntkcheck.build import experiment
    from ntkcheck.problems import qp as problems

    calls = {"generate": 0, "build_model": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(problems, "generate", counted("generate", problems.generate))
    monkeypatch.setattr(experiment, "build_model", counted("build_model", experiment.build_model))
    ntkcheck.verify(ntkcheck.TrainConfig(**SMALL, lr=1e-3, iters=4), ntkcheck.ProbeConfig(ntk_every=2))
    assert calls == {"generate": 1, "build_model": 1}


def test_a_run_and_a_probe_show_short_reprs_and_tables():
    """repr of a run or a probe is one line of headline numbers (it used to dump every array: thousands of
    characters); in a notebook they render as tables (_repr_html_), with the probe's numbers those of as_dict."""
    cfg = ntkcheck.TrainConfig(N=2, d=6, b=4, width=16, T=3, iters=3)
    run = ntkcheck.train(cfg)
    text = repr(run)
    assert len(text) < 200 and "\n" not in text and f"{run.summary['gain_final']:.4g}" in text
    assert "<table" in run._repr_html_()
    probe = ntkcheck.measure(run.model(), ntkcheck.make_problem(cfg), cfg.T, lr=cfg.lr)
    assert len(repr(probe)) < 200 and f"{probe.K.lambda_max:.4g}" in repr(probe)
    table = probe.table()
    assert table.loc["λ_max(K)", "value"] == probe.K.lambda_max and table.loc["F(X_T)", "value"] == probe.loss
    assert "<table" in probe._repr_html_()
