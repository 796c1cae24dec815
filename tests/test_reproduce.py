"""`ntkcheck reproduce`: a tiny end-to-end run of every figure, and its input validation."""

import pandas as pd
import pytest
from PIL import Image

from ntkcheck.apps import reproduce
from ntkcheck.cli import main

TINY = {
    "fig2": dict(N=2, d=6, b=4, Ts=(2, 3), lrs=(1e-4, 10.0), iters=3),
    "fig4a": dict(N=2, d=6, b=4, width=12, T=3, e=5.0, lr=1e-3, iters=3, seeds=(0, 1)),
    "fig4b": dict(N=2, d=6, b=4, width=12, Ts=(2, 3), e=5.0, lrs=(1e-3, 1e-5), iters=3),
    "fig5": dict(N=2, d=6, b=4, width=12, T=3, es=(1.0, 5.0), lrs=(1e-3, 1e-5), iters=3),
    "fig8": dict(N=2, d=6, b=4, width=12, T=3, e=5.0, lrs=(1e-3,), iters=3, N_test=3, T_test=40,
                 beta1s=(0.5, 0.9), beta2s=(0.9, 0.99)),
}


@pytest.mark.parametrize("figure", sorted(TINY))
def test_reproduce_writes_a_csv_and_a_png_that_opens(figure, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(reproduce.PRESET_GRIDS[figure], "small", TINY[figure])
    out = tmp_path / figure
    assert main(["reproduce", figure, "--out", str(out), "--threads", "1"]) == 0
    frame = pd.read_csv(out / f"{figure}.csv")
    assert len(frame) > 0
    with Image.open(out / f"{figure}.png") as image:
        assert image.size[0] > 100 and image.size[1] > 100
    assert (out / "config.json").is_file()


def test_a_divergence_is_a_row_not_a_crash(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(reproduce.PRESET_GRIDS["fig2"], "small", TINY["fig2"])
    assert main(["reproduce", "fig2", "--out", str(tmp_path / "f")]) == 0
    frame = pd.read_csv(tmp_path / "f" / "fig2.csv")
    exploded = frame[frame["lr"] == 10.0]
    assert (exploded["status"] == "diverged").any()
    assert exploded.loc[exploded["status"] == "diverged", "diverged_at"].notna().all()


@pytest.mark.parametrize(
    ("args", "param"),
    [
        (["fig3"], "FIGURE"),
        (["fig2", "--preset", "huge"], "--preset"),
        (["fig2", "--seed", "-1"], "--seed"),
        (["fig2", "--threads", "0"], "--threads"),
    ],
)
def test_bad_input_exits_2_naming_the_parameter(args, param, tmp_path, capsys):
    code = main(["reproduce", *args, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert param in err and len(err.strip().splitlines()) == 1, err


def test_an_existing_output_folder_is_never_overwritten(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "fig5.csv").write_text("someone's results\n")
    assert main(["reproduce", "fig5", "--out", str(tmp_path / "x")]) == 2
    assert "--out" in capsys.readouterr().err


def test_reproduce_without_a_figure_lists_them(capsys):
    assert main(["reproduce"]) == 2
    err = capsys.readouterr().err
    assert all(figure in err for figure in TINY) and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("figure", ["fig5", "fig4a"])
def test_an_interrupted_reproduce_resumes_running_only_the_missing_sub_runs(figure, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(reproduce.PRESET_GRIDS[figure], "small", TINY[figure])
    out, calls, real_fit = tmp_path / "r", [], reproduce.fit

    def fit(*args, fail_at=None, **kwargs):
        calls.append(1)
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(reproduce, "fit", lambda *a, **k: fit(*a, fail_at=2, **k))
    assert main(["reproduce", figure, "--out", str(out)]) == 130
    assert not out.exists() and (tmp_path / "r.partial" / "steps").is_dir()
    calls.clear()
    monkeypatch.setattr(reproduce, "fit", lambda *a, **k: fit(*a, **k))
    assert main(["reproduce", figure, "--resume", "--out", str(out)]) == 0
    total = 4 if figure == "fig5" else 2
    assert len(calls) == total - 1  # the one sub-run finished before the interruption is not run again
    monkeypatch.setattr(reproduce, "fit", real_fit)
    assert main(["reproduce", figure, "--out", str(tmp_path / "whole")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / f"{figure}.csv"), pd.read_csv(tmp_path / "whole" / f"{figure}.csv"))


def test_the_figures_show_the_runs_that_diverged():
    """fig5 writes each gain in its (e, η) cell and ``div`` where the run diverged; fig2 marks each diverged run ×
    at its T, and names every line it draws in the legend (GD included)."""
    import numpy as np

    from ntkcheck.report import reproduce_figures

    grid = [(e, lr) for e in (1.0, 5.0) for lr in (1e-3, 1e-5)]
    fig5 = pd.DataFrame([{"e": e, "lr": lr, "T": 3, "gain": np.nan if i == 1 else 0.1 * i,
                          "gain_mean": np.nan if i == 1 else 0.05 * i, "status": "diverged" if i == 1 else "completed"}
                         for i, (e, lr) in enumerate(grid)])
    ax = reproduce_figures.draw("fig5", fig5, {"T": 3}).axes[0]
    texts = sorted(t.get_text() for t in ax.texts if t.get_text())
    assert texts == sorted(["div", "0.00", "0.20", "0.30"])
    fig2 = pd.DataFrame([{"model": m, "T": T, "lr": lr, "F_T": np.nan if lr == 10.0 and T == 3 else 1.0 / T,
                          "F_GD": 0.5 / T, "status": "diverged" if lr == 10.0 and T == 3 else "completed"}
                         for m in ("a", "b", "c") for T in (2, 3) for lr in (1e-4, 10.0)])
    fig = reproduce_figures.draw("fig2", fig2, {"iters": 3})
    marks = [c for ax in fig.axes for c in ax.collections if c.get_label().startswith("diverged")]
    assert sum(len(c.get_offsets()) for c in marks) == 3 and all(c.get_offsets()[0][0] == 3 for c in marks)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["η = 1e−4", "η = 10", "GD", "diverged (no F(X_T))"]
