"""The one plotting style (ntkcheck.report.plots): atomic saves, no global state touched, plain numbers on the axes;
and a run's e–η figure, whose lines are checked against the closed form λ_max(K_0(e)) = (e/e_run)^{2(L−1)}·λ_max(e_run)
and the bounds of bounds/."""

import io as bytes_io
import math

import matplotlib
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.figure import Figure

import bounds
from ntkcheck.config import ConfigError
from ntkcheck.report import e_eta, plots, run_figures


def small_figure() -> Figure:
    fig = plots.figure(3, 2)
    fig.subplots().plot([1, 2, 3], [1, 4, 9])
    return fig


# -- saving -------------------------------------------------------------------------------------------------------


def test_save_writes_what_savefig_writes(tmp_path):
    fig = small_figure()
    path = plots.save(fig, tmp_path / "f.png")
    direct = bytes_io.BytesIO()
    with matplotlib.rc_context(plots.style()):
        fig.savefig(direct, format="png", dpi=plots.DPI, bbox_inches="tight")
    assert path == tmp_path / "f.png" and path.read_bytes() == direct.getvalue()
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]


@pytest.mark.parametrize("error", [ValueError("cannot draw"), OSError(28, "No space left on device")])
def test_a_failing_savefig_leaves_no_partial_file_and_no_temporary(tmp_path, monkeypatch, error):
    """savefig writes half a file, then fails: the target keeps its old content (or is never created), and the
    temporary file is gone."""
    fig = small_figure()

    def half_written(target, **kwargs):
        with open(target, "wb") as f:
            f.write(b"\x89PNG half")
        raise error

    monkeypatch.setattr(fig, "savefig", half_written)
    (tmp_path / "old.png").write_bytes(b"the figure from before")
    for name in ("new.png", "old.png"):
        with pytest.raises((ValueError, ConfigError)):
            plots.save(fig, tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.png"]  # no new.png, no .*.tmp
    assert (tmp_path / "old.png").read_bytes() == b"the figure from before"


def test_an_unknown_format_is_refused_before_anything_is_drawn(tmp_path):
    with pytest.raises(ConfigError, match="png, pdf, svg"):
        plots.save(small_figure(), tmp_path / "f.jpg", "jpg")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("fmt", ["png", "pdf", "svg"])
def test_every_format_is_written_as_itself(tmp_path, fmt):
    head = plots.save(small_figure(), tmp_path / f"f.{fmt}", fmt).read_bytes()[:64]
    assert {"png": b"\x89PNG", "pdf": b"%PDF", "svg": b"<?xml"}[fmt] in head


def test_drawing_and_saving_touch_no_global_setting(tmp_path):
    """Styled drawing and saving leave matplotlib's settings as they were, and create no pyplot figure."""
    import matplotlib.pyplot as plt

    before = dict(matplotlib.rcParams)
    figures_before = plt.get_fignums()
    plots.save(plots.styled(small_figure)(), tmp_path / "f.png")
    assert dict(matplotlib.rcParams) == before and plt.get_fignums() == figures_before


# -- plain numbers ------------------------------------------------------------------------------------------------


@given(st.floats(min_value=1e-300, max_value=1e300) | st.floats(min_value=-1e300, max_value=-1e-300))
def test_a_tick_is_the_number_to_four_digits_in_plain_text(x):
    text = plots.tick(x)
    assert "$" not in text and "+" not in text and "\\" not in text
    assert float(text.replace("−", "-")) == pytest.approx(x, rel=5e-4)


def test_log_axes_are_ticked_in_plain_numbers():
    fig = plots.figure(4, 3)
    ax = fig.subplots()
    ax.plot([1e-6, 1e2], [1e-3, 1e4])
    plots.log_axes(ax, x=True, y=True)
    fig.canvas.draw()
    labels = [t.get_text() for t in (*ax.get_xticklabels(), *ax.get_yticklabels()) if t.get_text()]
    assert labels and all("$" not in t and "^" not in t for t in labels), labels
    assert {"1e−6", "0.01", "1", "100", "1000"} <= set(labels), labels


# -- a run's e–η figure -------------------------------------------------------------------------------------------


def run_report(e=5.0, lr=1e-3, L=3, T=5, lam=123.0) -> dict:
    """report.json's parts that the e–η figure reads, with the conditions of bounds/ at this configuration."""
    rng = np.random.default_rng(0)
    data = {"lambda_max": lam, "beta_i": rng.uniform(1, 2, 3), "gd_gz": rng.uniform(0.1, 1, (3, T))}
    conditions = bounds.thresholds(T, L, e, lr, N=3, d=8, b=6, n=16, data=data)
    return {"config": {"model": "mlp", "init": "deterministic", "e": e, "lr": lr, "L": L, "T": T, "N": 3, "b": 6,
                       "d": 8, "width": 16, "iters": 10, "seed": 0},
            "conditions": conditions, "probe_points": {"0": {"K": {"lambda_max": lam}}}, "status": "completed"}


def line(ax, key: str):
    return next(x for x in ax.lines if x.get_label().startswith(e_eta.LINES[key][0]))


def test_the_run_e_eta_lines_scale_as_e_to_the_2L_minus_2_through_the_measured_kernel():
    report = run_report()
    cfg, lam, L = report["config"], 123.0, 3
    ax = run_figures._e_eta(report, None, {}, {}).axes[0]
    e, stable = line(ax, "stable").get_data()
    want = 2 / (lam * (np.asarray(e) / cfg["e"]) ** (2 * (L - 1)))  # closed form, float64
    np.testing.assert_allclose(stable, want, rtol=1e-12)
    e14, eq14 = line(ax, "eq14.eta").get_data()
    np.testing.assert_allclose(eq14, want / 2, rtol=1e-12)
    conditions = {c["key"]: c for c in report["conditions"]}
    e_a, apriori = line(ax, "eq14.eta_apriori").get_data()
    at_run = np.interp(np.log(cfg["e"]), np.log(e_a), np.log(apriori))
    assert math.exp(at_run) == pytest.approx(conditions["eq14.eta_apriori"]["threshold"], rel=1e-6)
    slope = np.diff(np.log(apriori)) / np.diff(np.log(e_a))
    np.testing.assert_allclose(slope, -2 * (L - 1), rtol=1e-9)
    c1 = next(c for c in ax.collections if c.get_label().startswith(e_eta.COR_C1))
    np.testing.assert_allclose(c1.get_offsets(), [[conditions["corC1.e_eta"]["threshold"], cfg["lr"]]], rtol=1e-12)
    drawn = {x.get_label().split(":")[0]: x.get_xdata()[0] for x in ax.lines if x.get_label().startswith("Lemma")
             and len(x.get_xdata())}
    for source, x in drawn.items():
        assert x == pytest.approx(bounds.lemma_threshold(source.split()[-1], cfg["T"], L))
    assert drawn  # at least one Lemma threshold falls within the drawn e range


def test_the_run_e_eta_figure_says_it_does_not_apply_to_the_lstm():
    report = run_report()
    report["config"] |= {"model": "lstm"}
    ax = run_figures._e_eta(report, None, {}, {}).axes[0]
    assert not ax.lines and "does not apply" in ax.texts[0].get_text()
