"""One progress protocol (issue 22): plain lines in a log, a bar that fits 80 columns on a terminal; and the rules the
command line calls (issue 21): train's resume/continue-from, verify's split of the options, sweep's choice of spec."""

from __future__ import annotations

import io
import math
import re

import pytest
from rich.cells import cell_len
from rich.console import Console

from ntkcheck.apps import verify_start
from ntkcheck.apps.sweep.run import MARKER
from ntkcheck.apps.sweep.spec import load_spec, make_spec
from ntkcheck.apps.sweep.start import start_spec
from ntkcheck.apps.train import run_train
from ntkcheck.cli import main
from ntkcheck.config import ConfigError, ProbeConfig, TrainConfig
from ntkcheck.engine.training import load_run
from ntkcheck.engine.training import train as engine_train
from ntkcheck.report.progress import ProgressDisplay, duration, engine_hooks

TINY = ["--N", "2", "--d", "6", "--b", "4", "--width", "8", "--T", "3", "--e", "3"]
TINY_FIELDS = dict(N=2, d=6, b=4, width=8, T=3, e=3.0)
LINE = re.compile(r"^train  k=(\d+)/(\d+)  F\(X_T\)=(\S+)  gain=(\S+)  (\S+) s/it  eta (.+)$")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def log(**kwargs) -> tuple[ProgressDisplay, io.StringIO]:
    out = io.StringIO()
    return ProgressDisplay("train", Console(file=out, width=80), **kwargs), out


def terminal_lines(out: io.StringIO) -> list[str]:
    """What a terminal of 80 columns shows, line by line (control codes removed, each redraw a line)."""
    return [line for line in re.split(r"[\r\n]", ANSI.sub("", out.getvalue())) if line.strip()]


# -- plain lines in a log ---------------------------------------------------------------------------------------


def test_redirected_train_prints_plain_progress_lines_with_the_recorded_numbers(tmp_path, capsys):
    K = 40
    assert main(["train", *TINY, "--iters", str(K), "--out", str(tmp_path / "run")]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    matched = [LINE.match(line) for line in lines]
    assert all(matched), lines
    ks = [int(m[1]) for m in matched]
    assert all(int(m[2]) == K for m in matched) and ks == sorted(ks) and ks[-1] == K
    assert len(lines) <= 20 + 1  # one line per 5 % of the work (and every 30 s: this run takes less)
    metrics = load_run(tmp_path / "run").metrics
    for m, k in zip(matched, ks):
        assert m[3] == f"{metrics['F_T'][k]:.4g}" and m[4] == f"{metrics['gain'][k]:.3g}"


def test_a_line_every_twentieth_of_the_work_with_the_time_left_of_a_steady_pace():
    """0.5 s per iteration: t̄ = 0.5 and the time left t̄ (K + 1 − (k + 1)); a line where k + 1 crosses j (K + 1)/20."""
    clock, total = Clock(), 1001
    display, out = log(clock=clock, every=math.inf)
    display("start", iterations=total)
    for k in range(total):
        clock.now += 0.5
        display("iteration", k=k, metrics={"F_T": 1.0, "gain": 0.5})
    printed = [LINE.match(line) for line in out.getvalue().splitlines()]
    expected = [next(k for k in range(total) if (k + 1) * 20 >= j * total) for j in range(1, 21)]
    assert [int(m[1]) for m in printed] == expected
    assert all(m[5] == "0.5" and m[6] == duration(0.5 * (total - int(m[1]) - 1)) for m in printed)


def test_a_line_every_n_seconds_when_the_work_is_slow():
    clock, total = Clock(), 10_000
    display, out = log(clock=clock, every=10.0)
    display("start", iterations=total)
    for k in range(300):
        clock.now += 3.0
        display("iteration", k=k, metrics={"F_T": 1.0, "gain": 0.5})
    ks = [int(LINE.match(line)[1]) for line in out.getvalue().splitlines()]
    assert ks == list(range(3, 300, 4))  # 10 s have passed at every 4th iteration (3 s each), 1/20 never


def test_a_resumed_run_counts_its_pace_from_its_own_iterations():
    clock = Clock()
    display, out = log(clock=clock, steps=1)
    display("start", iterations=101)
    for k in range(90, 101):  # k = 0..89 were done before the interruption
        clock.now += 2.0
        display("iteration", k=k, metrics={"F_T": 1.0, "gain": 0.5})
    assert LINE.match(out.getvalue().splitlines()[-1])[5] == "2"


def test_phases_print_once_and_a_set_up_error_prints_nothing():
    display, out = log()
    display("start", iterations=10)
    assert out.getvalue() == ""
    for text in ("diagnostics", "probe k=0", "training", "probe k=5", "training"):
        display("phase", text=text)
    assert out.getvalue().splitlines() == ["train  diagnostics", "train  probe k=0", "train  training",
                                           "train  probe k=5"]


@pytest.mark.parametrize(("seconds", "text"), [(44.6, "45 s"), (89, "89 s"), (420, "7 min"), (7560, "2.1 h"),
                                               (math.nan, "?")])
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_the_engine_hooks_are_events_of_the_one_protocol():
    events = []
    hooks = engine_hooks(lambda event, **info: events.append((event, info)))
    hooks["callback"](3, {"F_T": 2.0})
    hooks["phase"]("probe")
    assert events == [("iteration", {"k": 3, "metrics": {"F_T": 2.0}}), ("phase", {"text": "probe"})]


# -- a terminal of 80 columns -----------------------------------------------------------------------------------


@pytest.mark.parametrize("K", [3, 5000, 999_999])
def test_on_a_terminal_of_80_columns_no_line_is_longer(K):
    out = io.StringIO()
    with ProgressDisplay("verify", Console(width=80, force_terminal=True, file=out)) as display:
        display("start", iterations=K + 1)
        display("phase", text="diagnostics at W_0 (freeze, dead cone, best gains), a long phase")
        for k in (0, K // 2, K):
            display("iteration", k=k, metrics={"F_T": -1.2345678e-300, "gain": -123456789.5})
            display.bar.refresh()
    lines = terminal_lines(out)
    assert lines and max(cell_len(line) for line in lines) <= 80, lines
    assert f"{K + 1}/{K + 1}" in lines[-1] and "F(X_T) -1.235e-300" in lines[-1] and "gain -1.23e+08" in lines[-1]


def test_a_sweep_on_a_terminal_of_80_columns():
    out = io.StringIO()
    with ProgressDisplay("sweep", Console(width=80, force_terminal=True, file=out)) as display:
        display("start", cells=120, done=3, cell_iterations=600_000)
        display("advance", cell_iterations=150_000)
        display.bar.refresh()
    lines = terminal_lines(out)
    assert max(cell_len(line) for line in lines) <= 80 and "cells 3/120" in lines[-1] and " 25%" in lines[-1]


def test_a_real_train_on_a_terminal_of_80_columns():
    out = io.StringIO()
    with ProgressDisplay("train", Console(width=80, force_terminal=True, file=out)) as display:
        run_train("small", None, iters=5, progress=display, **TINY_FIELDS)
    lines = terminal_lines(out)
    assert max(cell_len(line) for line in lines) <= 80 and "6/6" in lines[-1]


# -- the rules behind the commands ------------------------------------------------------------------------------


def test_run_train_sends_start_then_every_iteration_and_equals_the_engine():
    events = []
    run = run_train("small", None, iters=4, progress=lambda event, **info: events.append((event, info)),
                    **TINY_FIELDS)
    assert events[0] == ("start", {"iterations": 5})
    assert [info["k"] for event, info in events[1:]] == list(range(5))
    assert [info["metrics"]["F_T"] for _, info in events[1:]] == list(run.metrics["F_T"])
    reference = engine_train(TrainConfig(**TINY_FIELDS, iters=4))
    assert list(run.metrics["F_T"]) == list(reference.metrics["F_T"])


@pytest.mark.parametrize(("kwargs", "field", "named"), [
    (dict(continue_from="x", resume=True, iters=9), "continue_from", "`resume`"),
    (dict(continue_from="x"), "iters", "`continue_from`"),
    (dict(resume=True), "resume", "`out`"),
])
def test_run_train_refuses_what_the_rules_exclude(kwargs, field, named):
    with pytest.raises(ConfigError) as info:
        run_train("small", None, **kwargs)
    assert info.value.field == field and named in info.value.message and "--" not in info.value.message


def test_the_command_line_shows_fields_named_in_a_message_as_flags(tmp_path, capsys):
    code = main(["train", "--continue-from", str(tmp_path), "--iters", "5", "--resume", "--out", str(tmp_path / "r")])
    assert code == 2
    assert capsys.readouterr().err.strip() == ("error --continue-from: cannot be combined with --resume: "
                                              "--continue-from starts a new folder from a finished run, --resume "
                                              "continues an interrupted one")


def test_run_verify_splits_the_options_between_training_and_probes(monkeypatch):
    calls = []
    monkeypatch.setattr(verify_start.verification, "verify",
                        lambda cfg, probes, out, **kw: calls.append((cfg, probes, kw)))
    verify_start.run_verify("paper", None, width=16, ntk_every=3, jacobian="func")
    cfg, probes, kw = calls[0]
    assert cfg.width == 16 and cfg.T == 100  # the paper preset, width changed
    assert probes == ProbeConfig(ntk_every=3, jacobian="func")
    verify_start.run_verify(TrainConfig(), None, probes=ProbeConfig(early=7), T=4, ntk_every=2)
    assert calls[1][0] == TrainConfig(T=4) and calls[1][1] == ProbeConfig(early=7, ntk_every=2)


def test_start_spec_resume_spec_file_or_preset(tmp_path):
    out = tmp_path / "sweep"
    with pytest.raises(ConfigError) as info:
        start_spec(out, resume=True)
    assert info.value.field == "resume" and MARKER in info.value.message
    stored = make_spec("small", base=dict(TINY_FIELDS, iters=2), grid=["e=1,2"], seeds="0-1")
    (tmp_path / "sweep.partial").mkdir()
    (tmp_path / "sweep.partial" / MARKER).write_text(stored.to_toml())
    assert start_spec(out, resume=True).to_dict() == stored.to_dict()  # nothing given: the interrupted sweep's

    file = tmp_path / "spec.toml"
    file.write_text(stored.to_toml())
    got = start_spec(out, spec=file, grid=["lr=1e-3,1e-2"], seeds="4", base={"iters": 3}, vary="init")
    want = load_spec(file, grid={"lr": (1e-3, 1e-2)}, seeds="4", base={"iters": 3}, vary="init")
    assert got.to_dict() == want.to_dict() and got.base.iters == 3 and got.seeds == (4,)

    got = start_spec(out, resume=True, grid=["e=1,2"], base=dict(TINY_FIELDS, iters=2), seeds="0-1")
    assert got.to_dict() == stored.to_dict()  # a resume given the same options: the same spec (rule 3)
