"""``ntkcheck verify`` end to end on a tiny configuration: the files, the verdicts, the numbers in the report
equal to the metrics and to independent recomputations, resume, divergence, and the command line."""

import json

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch

import bounds
from ntkcheck.apps.verify import verify
from ntkcheck.cli import main
from ntkcheck.config import ConfigError, ProbeConfig, TrainConfig, hidden_widths
from ntkcheck.instruments.probes import measure
from ntkcheck.models.math_l2o import build
from ntkcheck.problems import qp as problems
from ntkcheck.results.runfolder import Interrupted
from ntkcheck.theory import problem_constants

TINY = dict(N=3, d=8, b=6, width=16, T=5, e=5.0, lr=1e-3, iters=12, checkpoint_every=4)
PROBES = ProbeConfig(ntk_every=4, early=5)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return verify(TrainConfig(**TINY), PROBES, tmp_path_factory.mktemp("v") / "run")


def wide(frame):
    return frame.pivot(index="iteration", columns="quantity", values="value").rename_axis(columns=None)


def test_the_run_folder_holds_the_report_metrics_spectra_and_figures(run):
    folder = run.folder
    for name in ("report.md", "report.json", "metrics.parquet", "metrics.csv", "spectra.npz", "train/checkpoint.pt"):
        assert (folder / name).is_file(), name
    for name in ("loss", "spectrum", "probes", "e_eta"):
        image = matplotlib.image.imread(folder / "figures" / f"{name}.png")
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert image.std() > 0  # not a blank canvas
    assert not folder.with_name("run.partial").exists()
    on_disk = wide(pd.read_parquet(folder / "metrics.parquet"))
    pd.testing.assert_frame_equal(on_disk[run.metrics.columns], run.metrics)
    assert list(pd.read_parquet(folder / "metrics.parquet").columns) == ["run_id", "iteration", "quantity", "value"]


def test_every_condition_of_the_registry_has_a_verdict(run):
    report = json.loads((run.folder / "report.json").read_text())
    keys = [c.key for c in bounds.registry()]
    assert [c["key"] for c in report["conditions"]] == keys
    for c in report["conditions"]:
        assert c["holds"] in (True, False, None)
        assert not c["note"].startswith(("evaluation error", "not evaluated")), c  # verify measures every quantity
        assert c["source"] and c["latex"] and c["status"] in ("stated", "scaling", "derived")
    md = (run.folder / "report.md").read_text()
    assert all(key in md for key in keys)


def test_report_numbers_equal_the_metrics(run):
    report = json.loads((run.folder / "report.json").read_text())
    m = wide(pd.read_parquet(run.folder / "metrics.parquet"))
    assert report["summary"]["F_T_final"] == m["F_T"].iloc[-1]
    assert report["summary"]["F_T_initial"] == m["F_T"].iloc[0]
    assert sorted(map(int, report["probe_points"])) == [0, 4, 8, 12]
    for k, p in report["probe_points"].items():
        assert p["K"]["lambda_max"] == m.loc[int(k), "ntk/K/lambda_max"]
        assert p["alpha"]["alpha"] == m.loc[int(k), "alpha/alpha"]
        assert p["loss"] == pytest.approx(m.loc[int(k), "F_T"], rel=1e-12)  # float64 probe vs float64 training


def test_the_last_probe_equals_an_independent_measurement_of_the_final_weights(run):
    """The probe hook sees W_K: recomputing the NTK from the saved final weights gives the same numbers."""
    state = torch.load(run.folder / "train" / "checkpoint.pt", weights_only=True)
    cfg = TrainConfig.from_dict(state["config"])
    model = build(hidden_widths(cfg.width, cfg.L), state["params"], step_scale=cfg.step_scale)
    again = measure(model, problems.generate(cfg.N, cfg.d, cfg.b, cfg.seed), cfg.T, lr=cfg.lr, method="dense",
                    jacobian_method="func")
    probe = run.probes[cfg.iters]
    assert probe.K.lambda_max == pytest.approx(again.K.lambda_max, rel=1e-10)
    assert probe.K_training.lambda_max == pytest.approx(again.K_training.lambda_max, rel=1e-10)
    assert run.report["probe_points"][str(cfg.iters)]["K"]["lambda_max"] == probe.K.lambda_max


def test_drift_at_k0_is_zero_and_grows_along_training(run):
    m = run.metrics
    drift = m["ntk/drift/rel_change"].dropna()
    assert drift.loc[0] == 0.0
    assert drift.loc[12] > 0
    # K̃ = K at the deterministic init (W_L = 0: only W_L's block, where detaching changes nothing); then apart
    split = m["ntk/K_vs_K_training/rel_change"].dropna()
    assert split.loc[0] == 0.0
    assert m["ntk/K_training/asymmetry"].loc[0] <= 1e-14  # J J̃ᵀ with J̃ = J: symmetric up to GEMM rounding
    assert split.loc[12] > 0


def test_problem_constants_against_the_model_and_numpy():
    """β_i, σ_min(M_i)² and ‖x_i^mn‖² by numpy's SVD and pseudo-inverse (x^mn solves M x = y from the row space);
    F_GD(X_T) of the numpy GD in bounds equals the model's own GD trajectory (torch)."""
    p = problems.generate(4, 9, 5, seed=3)
    c = problem_constants(p, T=6, step_scale=1.0)
    for i in range(p.N):
        M, y = p.M[i].numpy(), p.Y[i].numpy()
        s = np.linalg.svd(M, compute_uv=False)
        assert c["beta_i"][i] == pytest.approx(s[0] ** 2, rel=1e-12)
        assert c["sigma_min_sq_i"][i] == pytest.approx(s[-1] ** 2, rel=1e-9)
        x = np.linalg.pinv(M) @ y
        assert c["dist_sq_i"][i] == pytest.approx(x @ x, rel=1e-10)
        assert np.linalg.norm(M @ x - y) < 1e-10 * np.linalg.norm(y)
    assert c["F_gd"][0] == pytest.approx(0.5 * float((p.Y ** 2).sum()), rel=1e-14)  # X_0 = 0
    assert c["F_gd"][-1] == pytest.approx(c["F_gd_T"], rel=1e-12)
    assert np.all(np.diff(c["F_gd"]) <= 0)  # GD with step 1/β_i descends


def test_lanczos_probes_agree_with_dense(tmp_path):
    dense = verify(TrainConfig(**{**TINY, "iters": 2}), ProbeConfig(ntk_every=0), tmp_path / "d", figures=False)
    lanczos = verify(TrainConfig(**{**TINY, "iters": 2}), ProbeConfig(ntk_every=0, ntk_method="lanczos"),
                     tmp_path / "l", figures=False)
    for k in ("0", "2"):
        a, b = dense.report["probe_points"][k], lanczos.report["probe_points"][k]
        assert b["method"] == "lanczos"
        assert b["K"]["lambda_max"] == pytest.approx(a["K"]["lambda_max"], rel=1e-8)
        assert abs(b["K"]["lambda_min"] - a["K"]["lambda_min"]) <= 1e-8 * a["K"]["lambda_max"]


def test_interrupted_verify_resumes_to_the_uninterrupted_numbers(tmp_path, run):
    def stop(k, metrics):
        if k == 6:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="resume=True"):
        verify(TrainConfig(**TINY), PROBES, tmp_path / "run", callback=stop)
    assert (tmp_path / "run.partial" / "probes" / "k000004.json").exists()
    resumed = verify(TrainConfig(**TINY), PROBES, tmp_path / "run", resume=True, figures=False)
    a, b = run.metrics, resumed.metrics
    pd.testing.assert_frame_equal(a[sorted(a.columns)], b[sorted(b.columns)])
    assert [c["holds"] for c in resumed.report["conditions"]] == [c["holds"] for c in run.report["conditions"]]
    # the time of the probes and diagnostics measured before the interruption is read back, not lost
    first = json.loads((tmp_path / "run" / "probes" / "k000004.json").read_text())["seconds"]
    assert resumed.report["seconds"]["k=4"] == first and set(resumed.report["seconds"]) == set(run.report["seconds"])


def test_the_report_says_where_the_time_went(run):
    """report.json's seconds: training, the diagnostics and every probe, each positive (linearised training 0: auto
    skipped it on this run); report.md reads them out."""
    seconds = run.report["seconds"]
    assert set(seconds) == {"training", "diagnostics", "linearised_training", *(f"k={k}" for k in run.probes)}
    assert seconds.pop("linearised_training") == 0.0 and run.report["linearised_training"]["skipped"]
    assert all(v > 0 for v in seconds.values())
    assert seconds["training"] == run.report["summary"]["seconds_training"]
    md = (run.folder / "report.md").read_text()
    assert f"the {len(run.probes)} probes" in md and "the diagnostics at W_0" in md


def test_a_diverged_run_still_writes_its_report(tmp_path):
    result = verify(TrainConfig(**{**TINY, "lr": 1e300, "init": "random", "iters": 4}), ProbeConfig(ntk_every=1),
                    tmp_path / "run", figures=False)
    assert result.status == "diverged"
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["status"] == "diverged"
    assert "diverged" in (tmp_path / "run" / "report.md").read_text()


def test_cli_verify_tiny(tmp_path, capsys):
    args = ["verify", "--N", "3", "--d", "8", "--b", "6", "--width", "16", "--T", "5", "--e", "5", "--lr", "1e-3",
            "--iters", "4", "--ntk-every", "2", "--no-figures", "--out", str(tmp_path / "v")]
    assert main(args) == 0
    assert "conditions of the proof" in capsys.readouterr().out
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    assert report["config"]["N"] == 3 and report["config"]["iters"] == 4  # explicit options override the preset


@pytest.mark.parametrize("flag, value", [("--ntk-method", "exact"), ("--preset", "huge"), ("--ntk-every", "-1"),
                                          ("--alpha-steps", "some"), ("--jacobian", "fd"), ("--fit-early", "1")])
def test_cli_verify_bad_input_names_the_parameter(tmp_path, capsys, flag, value):
    assert main(["verify", flag, value, "--iters", "1", "--out", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err


def test_initial_kernel_scales_as_e_to_the_2L_minus_2():
    """At the deterministic init only W_L's block of J is non-zero, the trajectory is GD whatever e, and
    G_{L−1,t} scales as e^{L−1}: K_0(e) = e^{2(L−1)} K_0(1) — the exact stability line of figures/e_eta.png."""
    from ntkcheck.instruments.ntk import empirical_ntk
    from ntkcheck.models import init as inits

    p = problems.generate(3, 8, 6, seed=1)
    for L in (2, 3, 4):
        widths = hidden_widths(16, L)
        K = {e: empirical_ntk(build(widths, inits.deterministic(widths, e, seed=0)), p, 5).K for e in (1.0, 7.0)}
        assert torch.allclose(K[7.0], 7.0 ** (2 * (L - 1)) * K[1.0], rtol=1e-12, atol=1e-12 * float(K[7.0].abs().max()))


def test_cli_strict_exits_1_when_a_required_condition_fails(tmp_path, capsys):
    """α₀ = 0 for this architecture (docs/ARCHITECTURE.md §2), so Thm 4.3's hypothesis fails: --strict says so with 1."""
    args = ["verify", "--N", "3", "--d", "8", "--b", "6", "--width", "16", "--T", "5", "--e", "5", "--lr", "1e-3",
            "--iters", "2", "--ntk-every", "0", "--no-figures", "--strict", "--out", str(tmp_path / "v")]
    assert main(args) == 1
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    failed = [c["key"] for c in report["conditions"] if c["required"] and c["holds"] is False]
    assert "thm4_3.alpha0" in failed and "thm4_3.alpha0" in capsys.readouterr().err


def test_table_numbers_keep_the_distance_from_one():
    """A rate 1 − 2e-5 must not print as 1: the distance from 1 is what a rate comparison reads."""
    from ntkcheck.report.run import fmt

    assert fmt(1 - 2e-5) == "1 − 2e-05" and fmt(1 + 1e-6) == "1 + 1e-06" and fmt(1.0) == "1"
    assert fmt(None) == "—" and fmt(float("inf")) == "∞" and fmt(3.2e-9) == "3.2e-09"


def test_probe_table_calls_alpha_exactly_zero_only_under_the_pattern_bound(run):
    """The probes table of report.md: α = 0 reads "exactly" where the activation patterns bound rank G below
    min(N·d, n) (the singular values past the bound are exact zeros), and "≤ tol" otherwise."""
    import copy

    from ntkcheck.report.run import markdown

    report = copy.deepcopy(run.report)
    point = report["probe_points"]["0"]["alpha"]
    point.update(alpha=0.0, rank_bound=3, patterns=2)
    assert "0 (exactly)" in markdown(report) and "≤ 3 from 2 patterns" in markdown(report)
    for p in report["probe_points"].values():
        p["alpha"].update(rank_bound=None, patterns=None)
    assert "0 (exactly)" not in markdown(report) and "0 (≤ tol" in markdown(report)


def test_report_md_is_rendered_from_report_json(run):
    """report.md carries nothing that report.json does not: rendering the JSON gives the same file."""
    from ntkcheck.report.run import markdown

    report = json.loads((run.folder / "report.json").read_text())
    assert markdown(report) == (run.folder / "report.md").read_text()


def test_resume_refuses_other_options(tmp_path):
    def stop(k, metrics):
        if k == 1:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        verify(TrainConfig(**TINY), PROBES, tmp_path / "run", callback=stop)
    with pytest.raises(ConfigError, match="^e: "):
        verify(TrainConfig(**{**TINY, "e": 6.0}), PROBES, tmp_path / "run", resume=True)
    with pytest.raises(ConfigError, match="^resume: "):
        verify(TrainConfig(**TINY), ProbeConfig(ntk_every=3), tmp_path / "run", resume=True)


@pytest.mark.parametrize("option, value, says", [("--lr", "1e3", "the kernel is exactly zero"),
                                                  ("--e", "1e308", "training diverged")])
def test_verify_where_the_theory_breaks_down_still_reports_and_says_why(tmp_path, capsys, option, value, says):
    """η = 1e3 drives K to exactly 0 (the run freezes); e = 1e308 overflows at k = 0: both write their report,
    say so in it, and exit 0."""
    args = ["verify", "--N", "4", "--d", "16", "--b", "12", "--width", "64", "--T", "8", "--iters", "40",
            "--ntk-every", "20", option, value, "--out", str(tmp_path / "v"), "--threads", "1"]
    assert main(args) == 0
    printed = capsys.readouterr()
    assert says in " ".join((printed.out + printed.err).split())  # under the verdict table
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    assert any(says in note for note in report["notes"])
    assert says in (tmp_path / "v" / "report.md").read_text()
    for name in ("loss", "spectrum", "probes", "e_eta"):
        assert (tmp_path / "v" / "figures" / f"{name}.png").is_file()


def test_every_comparison_has_the_verdict_its_definition_gives(run):
    """A bound holds iff measured ≤ predicted; a linearised prediction agrees iff it is within PREDICTION_RTOL of
    the measured number; a missing number leaves the row undecided."""
    from ntkcheck.theory import PREDICTION_RTOL
    rows = run.report["comparisons"]
    assert rows and {r["kind"] for r in rows} == {"bound", "prediction"}
    for r in rows:
        p, m = r["predicted"], r["measured"]
        if not (np.isfinite(p) and np.isfinite(m)):
            assert r["verdict"] == "undecided"
        elif r["kind"] == "bound":
            assert r["verdict"] == ("holds" if m <= p else "FAILS")
        else:
            assert r["verdict"] == ("agrees" if abs(m / p - 1) <= PREDICTION_RTOL else "differs")
    md = (run.folder / "report.md").read_text()
    assert all(f"| {r['verdict']} |" in md for r in rows)


@pytest.mark.parametrize("changes", [{}, dict(TINY, bias=True, detach=False, init_seed=3, dtype="float32"),
                                     dict(TINY, draw="paper", step_scale=0.9999, optimizer="adam", loss="mean")])
def test_the_report_command_rebuilds_the_configuration(changes, tmp_path, monkeypatch):
    """report["command"], run through the command line, asks verify for exactly the same configuration."""
    from ntkcheck.apps import verify as verification
    cfg, probes = TrainConfig(**changes), ProbeConfig(ntk_every=3, ntk_method="lanczos", early=7)
    command = verification.rerun_command(cfg, probes, tmp_path / "x", "svg")
    asked = {}

    def capture(cfg, probes, out, **kwargs):
        asked.update(cfg=cfg, probes=probes, out=out, figures=kwargs["figures"])
        raise SystemExit(0)

    monkeypatch.setattr(verification, "verify", capture)
    words = command.split()
    assert words[:2] == ["ntkcheck", "verify"]
    with pytest.raises(SystemExit):
        main(words[1:])
    assert asked["cfg"] == cfg and asked["probes"] == probes
    assert str(asked["out"]) == str(tmp_path / "x") and asked["figures"] == "svg"


def test_auto_skips_linearised_training_where_the_eigen_projection_is_it(run):
    """The default run (least squares, gd, SGD, loss last, deterministic init, dense K_0) does not repeat the
    eigen-projection by training the Taylor model (the test below pins the two equal); report.md says why."""
    lin = run.report["linearised_training"]
    assert "eigen-projection rows are linearised training" in lin["skipped"] and lin["seconds"] == 0.0
    assert "linearised_training" not in run.curves
    assert not any("by linearised training" in r["what"] for r in run.report["comparisons"])
    assert "was not run: the eigen-projection rows" in (run.folder / "report.md").read_text()
    assert ProbeConfig(linearised="off").linearised == "off"
    with pytest.raises(ConfigError, match="linearised"):
        ProbeConfig(linearised="yes")


def test_linearised_training_sits_beside_the_eigen_projection_and_on_the_qp_equals_it(tmp_path):
    """The Taylor model at W_0 trained with the run's loss, optimiser and η: its L^lin_K is train_linearised's run
    alone, and with SGD, the loss "last" and the deterministic init (K̃ = K) its whole curve is the eigen-projection
    of K_0; the row follows the eigen-projection's in report.json, report.md and the terminal table."""
    from rich.console import Console

    from ntkcheck.build.experiment import build_model, make_problem
    from ntkcheck.engine.linearised import train_linearised
    from ntkcheck.report.run import rich_tables

    run = verify(TrainConfig(**TINY), ProbeConfig(ntk_every=4, early=5, linearised="on"), tmp_path / "run")
    cfg = run.config
    alone = train_linearised(build_model(cfg), make_problem(cfg), cfg.T, lr=cfg.lr, iters=cfg.iters)
    np.testing.assert_allclose(run.curves["linearised_training"], alone.loss, rtol=1e-12, atol=0)
    np.testing.assert_allclose(run.curves["linearised_training"], run.curves["eigen_projection"], rtol=1e-9)
    rows = run.report["comparisons"]
    i = next(i for i, r in enumerate(rows) if r["what"].startswith("training loss at k = 12 by linearised training"))
    assert "eigen-projection" in rows[i - 1]["theory"] and "eigen-projection" not in rows[i + 1]["theory"]
    loss = run.training.metrics["loss"].to_numpy()
    assert (rows[i]["predicted"], rows[i]["measured"]) == (alone.loss[-1], loss[-1])
    lin = run.report["linearised_training"]
    gap = np.abs(loss - alone.loss) / np.abs(loss)
    assert lin["max_relative"] == pytest.approx(gap.max(), rel=1e-12) and lin["argmax_relative"] == gap.argmax()
    assert lin["final_relative"] == pytest.approx(gap[-1], rel=1e-12) and 0 < gap[-1] < 0.1
    md = (run.folder / "report.md").read_text()
    escaped = rows[i]["what"].replace("|", "\\|")  # md_table escapes the norm bars
    assert "**Linearised training**" in md and f"| {escaped} |" in md
    console = Console(record=True, width=200)
    console.print(*rich_tables(run.report))
    assert "by linearised training" in console.export_text()


def test_outside_the_theorem_linearised_training_is_the_prediction_that_still_applies():
    cfg = TrainConfig(**{**TINY, "problem": "lasso", "update": "prox"})
    result = verify(cfg, PROBES, figures=False)
    rows = result.report["comparisons"]
    i = next(i for i, r in enumerate(rows) if "by linearised training" in r["what"])
    assert rows[i - 1]["verdict"] == "does not apply" and "eigen-projection" in rows[i - 1]["theory"]
    assert rows[i]["verdict"] in ("agrees", "differs") and np.isfinite(rows[i]["predicted"])
    from ntkcheck.build.experiment import build_model, make_problem
    from ntkcheck.engine.linearised import train_linearised

    alone = train_linearised(build_model(cfg), make_problem(cfg), cfg.T, lr=cfg.lr, iters=cfg.iters)
    assert rows[i]["predicted"] == pytest.approx(alone.loss[-1], rel=1e-12)
