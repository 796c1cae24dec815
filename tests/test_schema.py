"""The probe columns of :mod:`ntkcheck.results.schema`: each reads its quantity (against the typed probe and
independent recomputations), the readers are None-safe (the LSTM's α, a Lanczos probe's rank), verify's metrics and a
sweep's probes and cells carry exactly the schema's columns, and one column added to the schema alone reaches
report.md, report.json, metrics.parquet and cells.parquet."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ntkcheck import empirical_ntk, kernel_drift, measure, train
from ntkcheck.apps.sweep import make_spec, sweep
from ntkcheck.apps.sweep.probing import probe_cell
from ntkcheck.apps.verify import probe_frame, verify
from ntkcheck.build.experiment import build_model, initial_weights, make_problem
from ntkcheck.config import ProbeConfig, TrainConfig
from ntkcheck.instruments.dynamics import stability_threshold
from ntkcheck.report import run as run_report
from ntkcheck.report import sweep as sweep_report
from ntkcheck.results import schema
from ntkcheck.results.schema import Column

TINY = dict(N=2, d=4, b=3, width=8, T=3, e=5.0, lr=1e-3)
LSTM = dict(N=2, d=4, b=3, T=3, lr=1e-2, model="lstm", lstm_hidden=4)
TRACE = Column("ntk/trace", "trace K", "trace(K) = Σ_i λ_i(K), K = J Jᵀ", ("K", "trace"), "trace")


def _probe(cfg: TrainConfig, method: str = "dense"):
    return measure(build_model(cfg), make_problem(cfg), cfg.T, lr=cfg.lr, method=method, kernels=True)


def _probe_part(columns, other=("cell", "iteration", "method", "error")) -> list[str]:
    """The schema's part of a sweep frame's columns: not the row's identity, not the diagnostics at W_0."""
    return [c for c in columns if c not in other and not c.startswith(("freeze_", "dead_", "diagnostics_"))]


# -- the columns ------------------------------------------------------------------------------------------------


def test_every_column_reads_the_typed_probe():
    """Each column's value from the probe's dict equals the typed ProbeResult's attribute (the readers before the
    schema read those), and 2/λ_max equals the stability threshold of the linearised dynamics."""
    cfg = TrainConfig(**TINY)
    r = _probe(cfg)
    other = measure(build_model(cfg.replace(e=6.0)), make_problem(cfg), cfg.T, lr=cfg.lr, method="dense",
                    kernels=True)
    r = r.replace(drift=kernel_drift(other.kernels[0], r.kernels[0]))
    a, lin = r.alpha, r.linearised
    typed = {
        "ntk/loss": r.loss, "ntk/n_outputs": r.n_outputs, "ntk/K/lambda_max": r.K.lambda_max,
        "ntk/K/lambda_min": r.K.lambda_min, "ntk/K/threshold": stability_threshold(r.K.lambda_max),
        "ntk/K/rank": r.K.rank.rank, "ntk/K/rank_tol": r.K.rank.tol,
        "ntk/K_training/lambda_max": r.K_training.lambda_max, "ntk/K_training/lambda_min": r.K_training.lambda_min,
        "ntk/K_training/rank": r.K_training.rank.rank, "alpha/alpha": a.alpha, "alpha/sigma_max": a.sigma_max,
        "alpha/rank": a.rank.rank, "alpha/tol": a.rank.tol, "alpha/n_rows": a.shape[0], "alpha/n_cols": a.shape[1],
        "alpha/sigma_min_nonzero": a.singular_values[a.rank.rank - 1], "features/drift/rel_change": None,
        "ntk/plateau": lin.plateau, "ntk/drift/rel_change": r.drift.rel_change,
        "ntk/drift/distance": r.drift.distance, "ntk/K_vs_K_training/rel_change": r.K_vs_K_training.rel_change,
        "ntk/K_vs_K_training/distance": r.K_vs_K_training.distance,
        "ntk/K_training/asymmetry": r.K_training.asymmetry,
    }
    d = r.as_dict()
    assert {c.key: c.read(d) for c in schema.COLUMNS} == typed
    assert len({c.key for c in schema.COLUMNS}) == len(schema.COLUMNS)
    sweep_names = [c.sweep for c in schema.sweep_columns()]
    assert len(set(sweep_names)) == len(sweep_names)


def test_the_columns_against_independent_float64_recomputations():
    """λ_max, λ_min, trace and rank of K from its eigenvalues (numpy), loss ½‖r‖² from the unroll, 2/λ_max."""
    cfg = TrainConfig(**TINY)
    model, problem = build_model(cfg), make_problem(cfg)
    d = measure(model, problem, cfg.T, lr=cfg.lr, method="dense", jacobian_method="func").as_dict()
    K = empirical_ntk(model, problem, cfg.T, method="func").K.numpy()
    lam = np.linalg.eigvalsh(K)
    value = {c.key: c.read(d) for c in schema.COLUMNS}
    assert value["ntk/K/lambda_max"] == pytest.approx(lam[-1], rel=1e-10)
    assert value["ntk/K/lambda_min"] == pytest.approx(lam[0], abs=1e-10 * lam[-1])
    assert value["ntk/K/threshold"] == pytest.approx(2 / lam[-1], rel=1e-10)
    assert value["ntk/K/rank"] == np.linalg.matrix_rank(K, tol=value["ntk/K/rank_tol"], hermitian=True)
    p64 = problem.to(dtype=torch.float64)
    with torch.no_grad():
        X_T = build_model(cfg, dtype=torch.float64).unroll(p64, cfg.T).X[-1]
    r = torch.einsum("nbd,nd->nb", p64.M, X_T) - p64.Y  # r_i = M_i x_i − y_i
    assert value["ntk/loss"] == pytest.approx(0.5 * float((r * r).sum()), rel=1e-12)
    assert value["ntk/n_outputs"] == cfg.N * cfg.b == K.shape[0]


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_the_threshold_is_the_stability_threshold_of_the_dynamics(lam):
    assert schema.stable_lr({"K": {"lambda_max": lam}}) == stability_threshold(lam)


@pytest.fixture(scope="module")
def dense_probe() -> dict:
    cfg = TrainConfig(**TINY)
    r = _probe(cfg)
    return r.replace(drift=kernel_drift(r.kernels[0], r.kernels[0])).as_dict() | {"features_drift": {"rel_change": 0.0}}


# the parts a probe may not hold (None); features_drift: a sweep's probe adds it (verify's has none)
OPTIONAL = ("alpha", "drift", "linearised", "K_vs_K_training", "features_drift")


@settings(deadline=None, max_examples=30)
@given(st.sets(st.sampled_from(OPTIONAL)))
def test_the_readers_are_none_safe_part_by_part(dense_probe, gone):
    """With any of a probe's optional parts None, every reader runs; a column reads None exactly where its part is
    gone (the asymmetry goes with K_vs_K_training), and the sweep writes None for a count, NaN for a number."""
    probe = dense_probe | dict.fromkeys(gone)
    part = {schema.asymmetry: "K_vs_K_training", schema.stable_lr: "K"}  # the part each function reads
    for c in schema.COLUMNS:
        assert (c.read(probe) is None) == ((part[c.get] if callable(c.get) else c.get[0]) in gone), c.key
    metrics, row = schema.metrics_row(probe), schema.sweep_row(probe)
    assert set(metrics) == {c.key for c in schema.metrics_columns() if c.read(probe) is not None}
    for c in schema.sweep_columns():
        if c.read(probe) is None:
            assert row[c.sweep] is None if c.unit == "count" else math.isnan(row[c.sweep])


@pytest.mark.parametrize("bad", [dict(unit="metres"), dict(tables=("terminal",)), dict(sweep=None),
                                 dict(initial=False), dict(metrics=False, tables=("verify",))])
def test_a_column_that_cannot_reach_its_tables_is_refused(bad):
    with pytest.raises(ValueError, match="ntk/x"):
        Column(**{"key": "ntk/x", "label": "x", "formula": "x", "get": ("x",), "sweep": "x"} | bad)


def test_every_special_report_cell_is_a_column_of_its_table():
    """The cells the reports write with a tolerance or a size name columns the table shows (a renamed key would
    otherwise fall back to the plain number without a word)."""
    assert set(run_report.PROBE_CELLS) <= {c.key for c in schema.table("verify")}
    assert set(sweep_report.PROBE_CELLS) <= {c.key for c in schema.table("sweep")}


# -- None-safe readers --------------------------------------------------------------------------------------------


def test_the_lstm_without_alpha_reads_none_and_its_sweep_probe_runs():
    """The LSTM has no α (``not_applicable`` says why): verify's row leaves α out, the sweep writes None for its
    counts and NaN for its numbers, and the sweep's probe of an LSTM cell runs (it crashed on α = None)."""
    cfg = TrainConfig(**LSTM)
    r = _probe(cfg)
    assert r.alpha is None and "alpha" in r.not_applicable
    metrics = schema.metrics_row(r.as_dict())
    assert not any(k.startswith("alpha/") for k in metrics) and metrics["ntk/K/lambda_max"] == r.K.lambda_max
    row, K = probe_cell(cfg, make_problem(cfg), initial_weights(cfg), 0, "dense", None)
    assert row["alpha_rank"] is None and row["alpha_rows"] is None and math.isnan(row["alpha"])
    assert math.isnan(row["alpha_tol"]) and math.isnan(row["dead_share"]) and math.isnan(row["freeze_c"])
    assert row["lambda_max"] == pytest.approx(r.K.lambda_max, rel=1e-12)
    np.testing.assert_allclose(K, r.kernels[0], rtol=1e-12, atol=0)
    assert _probe_part(row) == [c.sweep for c in schema.sweep_columns()]
    cells = schema.initial_row(row)
    assert cells["alpha_0"] != cells["alpha_0"] and cells["lambda_max_0"] == row["lambda_max"]


def test_a_lanczos_probe_has_no_rank_plateau_or_drift():
    cfg = TrainConfig(**TINY)
    row, K = probe_cell(cfg, make_problem(cfg), initial_weights(cfg), 3, "lanczos", np.eye(cfg.N * cfg.b))
    dense = _probe(cfg)
    assert K is None and row["method"] == "lanczos" and row["rank_K"] is None
    assert all(math.isnan(row[name]) for name in ("rank_K_tol", "plateau", "drift_rel", "drift_distance"))
    assert row["lambda_max"] == pytest.approx(dense.K.lambda_max, rel=1e-8)
    assert row["stable_lr"] == pytest.approx(2 / dense.K.lambda_max, rel=1e-8)
    assert "ntk/K/rank" not in schema.metrics_row(_probe(cfg, "lanczos").as_dict())


def test_verify_report_rows_of_a_failed_probe_and_an_empty_frame():
    assert probe_frame({}).empty
    report = {"probe_points": {"3": {"iteration": 3, "error": "overflow"}}}
    assert run_report.probe_rows(report) == [["3", "overflow", *[""] * (len(run_report.probe_header()) - 2)]]


# -- one column added to the schema reaches every file ----------------------------------------------------------


@pytest.fixture(scope="module")
def with_trace(tmp_path_factory):
    """A tiny verify and a tiny sweep, run with trace(K) added to the schema (and nowhere else); the columns they
    were run with."""
    folder = tmp_path_factory.mktemp("schema")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(schema, "COLUMNS", (*schema.COLUMNS, TRACE))
        columns = schema.COLUMNS
        ran = verify(TrainConfig(**TINY, iters=2), ProbeConfig(ntk_every=2), folder / "verify", figures=False)
        spec = make_spec("small", base=TINY | dict(iters=2), grid={"e": (5.0,)}, seeds=[0], probe_at=(0, "K"),
                         probe_method="dense")
        swept = sweep(spec, folder / "sweep")
    return ran, swept, columns


def _trace_K(model, cfg) -> float:
    """trace(K), K = J Jᵀ from the autodiff Jacobian (not the probe's structured one)."""
    return float(empirical_ntk(model, make_problem(cfg), cfg.T, method="func").K.trace())


def test_verify_metrics_carry_exactly_the_schema_columns(with_trace):
    ran, _, columns = with_trace
    probed = [c for c in ran.metrics.columns if c not in ran.training.metrics.columns]
    assert probed == [c.key for c in columns if c.metrics]
    assert ran.report["probe_columns"][-1] == {"key": "ntk/trace", "label": "trace K", "formula": TRACE.formula,
                                               "unit": "number"}


def test_an_added_column_reaches_metrics_report_json_and_report_md(with_trace):
    ran, _, _ = with_trace
    cfg = ran.config
    want = {0: _trace_K(build_model(cfg), cfg), 2: _trace_K(ran.training.model(), cfg)}
    metrics = pd.read_parquet(ran.folder / "metrics.parquet")
    trace = metrics[metrics.quantity == "ntk/trace"].set_index("iteration")["value"]
    assert trace.to_dict() == pytest.approx(want, rel=1e-10)
    report = json.loads((ran.folder / "report.json").read_text())
    assert {int(k): q["ntk/trace"] for k, q in report["probe_quantities"].items()} == trace.to_dict()
    md = (ran.folder / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| k | F(X_T) |"))
    assert header.endswith("| trace K |")
    assert all(f"| {run_report.fmt(v)} |\n" in md for v in trace)


def test_a_sweep_carries_exactly_the_schema_columns_and_an_added_one_reaches_cells(with_trace):
    _, swept, columns = with_trace
    probes = pd.read_parquet(swept.folder / "probes.parquet")
    cells = pd.read_parquet(swept.folder / "cells.parquet")
    # the cells' JSON files sort their keys: the folder's frames hold the columns in alphabetical order
    assert sorted(_probe_part(probes.columns)) == sorted(c.sweep for c in columns if c.sweep)
    assert sorted(_probe_part([c for c in cells.columns if c.endswith("_0")])) == sorted(
        f"{c.sweep}_0" for c in columns if c.sweep and c.initial)
    cfg = swept.spec.cells()[0].config
    assert cells.loc[0, "trace_0"] == pytest.approx(_trace_K(build_model(cfg), cfg), rel=1e-10)
    final = probes.set_index("iteration").loc[cfg.iters, "trace"]
    assert final == pytest.approx(_trace_K(train(cfg).model(), cfg), rel=1e-8)
    md = (swept.folder / "report.md").read_text()
    assert any("| η | λ_max(K) |" in line and line.endswith("| trace K |") for line in md.splitlines())
    assert f"| {sweep_report.value(cells.loc[0, 'trace_0'])} |" in md
