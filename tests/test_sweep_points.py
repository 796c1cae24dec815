"""A sweep over configurations listed one by one (``points``), beside or instead of the product grid."""

from __future__ import annotations

import pandas as pd
import pytest

from ntkcheck import ConfigError
from ntkcheck.apps.sweep import load_spec, make_spec, sweep

TINY = dict(N=4, d=10, b=6, width=40, T=5, iters=6)


def test_points_are_the_grid_cells_they_name():
    """A point is the same configuration, with the same cell id, as the grid cell of the same values."""
    grid = make_spec("small", base=TINY, grid={"e": (5.0, 25.0), "lr": (1e-3, 1e-4)}, seeds="0-1")
    points = make_spec("small", base=TINY, seeds="0-1",
                       points=[{"e": e, "lr": lr} for e in (5.0, 25.0) for lr in (1e-3, 1e-4)])
    assert [c.id for c in points.cells()] == [c.id for c in grid.cells()]
    assert points.axes == grid.axes == ("e", "lr")


def test_a_point_with_its_own_seed_runs_only_that_seed_and_grid_times_points_is_a_product():
    spec = make_spec("small", base=TINY, grid={"width": (40, 80)}, seeds="0-2",
                     points=[{"e": 5.0, "seed": 7}, {"e": 25.0}])
    cells = spec.cells()
    assert [(c.config.width, c.config.e, c.config.seed) for c in cells] == [
        (w, e, s) for w in (40, 80) for e, seeds in ((5.0, (7,)), (25.0, (0, 1, 2))) for s in seeds]
    assert spec.axes == ("width", "e")


def test_points_round_trip_through_toml_and_run(tmp_path):
    spec = make_spec("small", base=TINY, probe_method="none", seeds="0",
                     points=[{"eta": 1e-3, "seed": 3}, {"lr": 1e-4, "e": 25.0}])
    path = tmp_path / "spec.toml"
    path.write_text(spec.to_toml())
    assert "points" in path.read_text()
    again = load_spec(path)
    assert again.same_cells(spec) and [c.id for c in again.cells()] == [c.id for c in spec.cells()]
    result = sweep(spec, tmp_path / "sw")
    assert list(result.cells["seed"]) == [3, 0] and list(result.cells["lr"]) == [1e-3, 1e-4]
    grid = sweep(make_spec("small", base=TINY | {"e": 25.0}, grid={"lr": (1e-4,)}, probe_method="none", seeds="0"))
    curve = result.curves[result.curves.cell == result.cells["cell"].iloc[1]].drop(columns="cell")
    pd.testing.assert_frame_equal(curve.reset_index(drop=True), grid.curves.drop(columns="cell"))


@pytest.mark.parametrize("points, message", [
    ([{"bogus": 1}], "not a configuration field"),
    ([{"init_seed": 1}], "set by seeds"),
    ([{"seed": -1}], "seed must be"),
    ([{"seed": True}], "seed must be"),
    ([{}], "table of configuration fields"),
    ([3], "table of configuration fields"),
    ([{"e": 5.0}, {"e": 5.0}], "twice"),
    ([{"lr": 1e-3}], "both a grid axis"),
    ("e=5", "list of tables"),
])
def test_bad_points_name_the_points_setting(points, message):
    with pytest.raises(ConfigError, match=message) as err:
        make_spec("small", grid={"lr": (1e-3,)} if "grid" in message else {}, points=points)
    assert err.value.field == "points"


def test_bad_points_name_the_points_setting_beside_a_grid():
    with pytest.raises(ConfigError, match="both a grid axis") as err:
        make_spec("small", grid={"lr": (1e-3,)}, points=[{"lr": 1e-4}])
    assert err.value.field == "points"


def test_a_sweep_without_figures_writes_its_numbers_and_report_and_no_figure(tmp_path):
    """figures=None (a study draws its own): the frames and report.md, no figures folder; the numbers are the same."""
    spec = make_spec("small", base=TINY, grid={"e": (5.0, 25.0)}, probe_method="none")
    plain = sweep(spec, tmp_path / "a", figures=None)
    drawn = sweep(spec, tmp_path / "b")
    assert not (tmp_path / "a" / "figures").exists() and (tmp_path / "b" / "figures").is_dir()
    assert (tmp_path / "a" / "report.md").is_file()
    pd.testing.assert_frame_equal(plain.curves, drawn.curves)
