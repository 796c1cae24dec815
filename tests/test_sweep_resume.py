"""A sweep's cells do not depend on the batch they ran in (issue 21): the batches are fixed when the sweep starts
(``plan.json``), so a sweep killed after any cell and rerun gives every cell the bits of the uninterrupted sweep,
an unstable cell included; a resume with another batch size is refused; the batch key is every config field but the
per-cell ones."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from ntkcheck import ConfigError, train
from ntkcheck.apps.sweep import make_spec, sweep
from ntkcheck.apps.sweep import run as sweep_run
from ntkcheck.apps.sweep.batched import PER_CELL_FIELDS, batch_key, plan, run_batch
from ntkcheck.apps.sweep.spec import Cell, cell_id
from ntkcheck.build.experiment import initial_weights
from ntkcheck.config import TrainConfig, preset
from ntkcheck.report import sweep_figures
from killed import interrupt

TINY = dict(N=3, d=8, b=6, width=32, T=5, iters=24)
UNSTABLE = dict(e=1.0, lr=10.0, init_seed=1)  # its loss grows 19-fold in one iteration (checked below)
TOL = {"float64": 1e-12, "float32": 1e-4}  # a batched cell against its single run (the README's, sweeps section)
DTYPES = tuple(TOL)


def _spec(dtype: str, batch_size: int = 3):
    """Eight cells sharing one problem (``vary="init"``), planned as batches of 3, 3 and 2."""
    return make_spec("small", base=TINY | {"dtype": dtype}, grid={"e": (1.0, 5.0), "lr": (1e-2, 10.0)}, seeds="0-1",
                     vary="init", record_every=1, probe_method="none", batch_size=batch_size)


def _curve(result, cid: str) -> pd.DataFrame:
    return result.curves[result.curves.cell == cid].drop(columns="cell").set_index("iteration")


def _rel(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """max over columns of max_k |a − b| / max_k |b| (norm-wise relative; NaN = NaN), with a scale of at least 1 for
    the ratios and shares (a gain 1 − F/F_GD near 0 is judged by its error, that of F over F_GD)."""
    x, y = a.to_numpy(float), b.to_numpy(float)
    diff = np.where(np.isnan(x) & np.isnan(y), 0.0, np.abs(x - y))
    ratio = np.array([c.startswith(("gain", "P_", "active_share", "diverged")) for c in b.columns], dtype=float)
    return float(np.max(diff.max(axis=0) / np.maximum(np.abs(y).max(axis=0), np.maximum(ratio, 1e-300))))




@pytest.fixture(scope="module", autouse=True)
def no_figures():
    """The figures are not what is tested here, and drawing them is most of a tiny sweep's time."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sweep_figures, "write", lambda *args: None)
        yield


@pytest.fixture(scope="module")
def reference(tmp_path_factory, no_figures) -> dict:
    """The uninterrupted sweep of :func:`_spec`, per dtype."""
    return {dtype: sweep(_spec(dtype), tmp_path_factory.mktemp(dtype) / "sw") for dtype in DTYPES}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("after", [1, 3, 7])  # in the first batch, between batches, in the last
def test_a_sweep_killed_after_any_cell_reruns_to_the_bits_of_the_uninterrupted_sweep(tmp_path, monkeypatch,
                                                                                     reference, dtype, after):
    spec, out = _spec(dtype), tmp_path / "sw"
    kept = interrupt(spec, out, after, monkeypatch)
    partial = tmp_path / "sw.partial"
    recorded = json.loads((partial / "plan.json").read_text())
    assert recorded["batches"] == [[c.id for c in batch] for batch in plan(spec.cells(), 3)] and \
        [len(batch) for batch in recorded["batches"]] == [3, 3, 2]  # the spec's cells in order, chunked
    stamps = {cid: (partial / "cells" / f"{cid}.json").stat().st_mtime_ns for cid in kept}
    ran = []

    def recording(batch, *args):
        ran.append([c.id for c in batch])
        run_batch(batch, *args)

    monkeypatch.setattr(sweep_run, "run_batch", recording)
    result = sweep(spec, out)
    assert ran == [batch for batch in recorded["batches"] if not set(batch) <= set(kept)]  # as planned, whole
    assert {cid: (out / "cells" / f"{cid}.json").stat().st_mtime_ns for cid in kept} == stamps  # kept as written
    expected = reference[dtype]
    pd.testing.assert_frame_equal(result.curves, expected.curves, check_exact=True)
    pd.testing.assert_frame_equal(result.cells.drop(columns="seconds"), expected.cells.drop(columns="seconds"),
                                  check_exact=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batched_cells_equal_single_runs_to_the_stated_tolerance_and_their_bits_depend_on_the_batch(reference,
                                                                                                   dtype):
    """The tolerance the README states; and another batch rounds otherwise (so a rerun that regrouped the cells
    would change them: the test above can fail)."""
    planned, regrouped = reference[dtype], sweep(_spec(dtype, batch_size=8))  # one batch of eight
    moved = {}
    for cell in _spec(dtype).cells():
        single = train(cell.config).metrics
        a, b = _curve(planned, cell.id)[single.columns], _curve(regrouped, cell.id)[single.columns]
        assert _rel(a, single) <= TOL[dtype] and _rel(b, single) <= TOL[dtype], cell.values
        moved[cell.id] = _rel(a, b)
    unstable = next(c for c in _spec(dtype).cells() if all(getattr(c.config, k) == v for k, v in UNSTABLE.items()))
    loss = _curve(planned, unstable.id).loss.to_numpy()
    assert np.isfinite(loss).all() and (loss[1:] > 10 * loss[:-1]).any()  # unstable: the loss jumps up
    assert min(moved.values()) > 0  # every cell's bits depend on its batch


def test_a_resume_with_another_batch_size_is_refused_and_leaves_the_folder(tmp_path, monkeypatch, capsys):
    from ntkcheck.cli import main

    out = tmp_path / "sw"
    kept = interrupt(_spec("float64"), out, 1, monkeypatch)
    with pytest.raises(ConfigError) as err:
        sweep(_spec("float64", batch_size=2), out)
    assert err.value.field == "batch_size" and "planned with batch_size 3" in str(err.value)
    assert main(["sweep", "--resume", "--out", str(out), "--batch-size", "4"]) == 2
    assert "--batch-size" in capsys.readouterr().err
    cells = tmp_path / "sw.partial" / "cells"
    assert sorted(p.stem for p in cells.glob("*.json")) == kept and not out.exists()


def test_a_resume_with_less_memory_fails_the_batches_that_no_longer_fit(tmp_path, monkeypatch):
    from ntkcheck import resources

    spec = make_spec("small", base=TINY | dict(iters=3), grid={"width": (32, 2048)}, probe_method="none")
    out = tmp_path / "sw"
    interrupt(spec, out, 1, monkeypatch)  # the width-32 cell written, the width-2048 one lost
    small, large = (resources.estimate(c.config).total_bytes for c in spec.cells())
    cells = sweep(spec, out, max_memory=(small + large) / 2).cells.set_index("width")
    assert cells.loc[32, "status"] == "completed"
    assert cells.loc[2048, "status"] == "failed" and "max_memory" in cells.loc[2048, "error"]


# -- the batch key ------------------------------------------------------------------------------------------------


def _cells(configs) -> list[Cell]:
    return [Cell(cell_id(c.to_dict()), {}, 0, c) for c in configs]


def test_every_config_field_but_the_per_cell_ones_splits_batches():
    cfg = preset("small", **TINY)
    for f in dataclasses.fields(TrainConfig):
        other = copy.copy(cfg)
        object.__setattr__(other, f.name, object())  # another value, whatever the field
        together = len(plan(_cells([cfg, other]), 8)) == 1
        assert together == (f.name in PER_CELL_FIELDS), f.name


def test_a_field_added_to_the_config_splits_batches_by_default():
    @dataclasses.dataclass(frozen=True)
    class Extended(TrainConfig):
        gamma: float = 1.0  # a model-shaping field added later, unknown to the batched engine

    cfg = Extended(**TINY)
    assert len(plan(_cells([cfg, cfg.replace(gamma=2.0)]), 8)) == 2
    assert len(plan(_cells([cfg, cfg.replace(e=2.0)]), 8)) == 1


def test_one_batch_mixing_every_per_cell_field_gives_each_cell_its_single_run(tmp_path):
    """The per-cell fields are really handled per cell: one batch of cells that differ in each of them."""
    base = preset("small", **TINY, e=5.0, lr=1e-2)
    W0 = initial_weights(base.replace(init="random", init_seed=5))
    np.savez(tmp_path / "W0.npz", **{k: v.numpy() for k, v in W0.items()})
    configs = [base, base.replace(e=1.0, lr=10.0, iters=10), base.replace(seed=1, init_seed=2, init="random"),
               base.replace(init="deterministic-abs", on_divergence="skip", checkpoint_every=3),
               base.replace(draw="paper", seed=7), base.replace(init_file=str(tmp_path / "W0.npz"))]
    assert {f for f in PER_CELL_FIELDS if len({getattr(c, f) for c in configs}) > 1} == set(PER_CELL_FIELDS)
    assert len({batch_key(c) for c in configs}) == 1
    cells = _cells(configs)
    spec = make_spec("small", base=TINY, record_every=1, probe_method="none")
    runs = []
    run_batch(cells, spec, runs.append)
    for run in runs:
        single = train(run.cell.config)
        assert run.status == single.status and list(run.curve.index) == list(single.metrics.index)
        assert _rel(run.curve[single.metrics.columns], single.metrics) <= 1e-12, run.cell.config
