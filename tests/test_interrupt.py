"""Interrupted runs: kill -9, SIGINT, SIGTERM (twice), two processes on one ``--out``; each interrupted run is then
continued with ``--resume --out DIR`` and nothing else, and must end bit for bit equal to an uninterrupted run
(float64 on CPU) in a clean folder.

The interrupted runs are real processes (``python -m ntkcheck.cli``), killed or signalled from here. Resumes,
reruns and the uninterrupted references go through the same command line in this process
(:func:`ntkcheck.cli.main`), which spares a torch import (several seconds on this machine) per call; one resume
runs as a process of its own. Every child gets ``--threads 1``, as this process has (conftest).

Where a kill at the exact moment needed is too rare to time, the state it leaves on disk is built directly
(stale temporary files, records past the checkpoint, a truncated file) and the resume is run on it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ntkcheck.cli import main
from ntkcheck.config import preset, probe_preset
from ntkcheck.results import runfolder
from ntkcheck.results.runfolder import Interrupted

TINY = ["--N", "2", "--d", "6", "--b", "4", "--width", "8", "--T", "3", "--e", "3", "--init", "random", "--lr", "1e-3"]
ITERS = 400
TRAIN = [*TINY, "--iters", str(ITERS), "--threads", "1"]
TINY_FIELDS = dict(N=2, d=6, b=4, width=8, T=3, e=3.0, init="random", lr=1e-3, iters=ITERS)

# An iteration of ~0.3-0.7 s on this machine: long enough to land a second signal inside the stop.
SLOW = ["--N", "16", "--d", "32", "--b", "25", "--width", "1024", "--T", "20", "--e", "3", "--init", "random",
        "--lr", "1e-3", "--wide-layer", "dense", "--iters", "8", "--checkpoint-every", "4", "--threads", "1"]

# A probe takes noticeable time (0.3-2 s): a kill can land inside it. A training checkpoint every 10 iterations
# marks the moment right before probe k = 10, 20, …
VERIFY = ["--N", "8", "--d", "32", "--b", "25", "--width", "256", "--T", "10", "--iters", "40", "--ntk-every", "10",
          "--jacobian", "func", "--checkpoint-every", "10", "--threads", "1"]
VERIFY_FIELDS = dict(N=8, d=32, b=25, width=256, T=10, iters=40, checkpoint_every=10)


class Killed(BaseException):
    """Stands for a kill -9 in the in-process simulations: no ``except Exception`` handles it."""


# -- helpers ---------------------------------------------------------------------------------------------------


@pytest.fixture
def children():
    """Processes started by a test; any still alive at its end is killed (by its own pid)."""
    procs = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def spawn(children, log: Path, command: str, *args: str) -> subprocess.Popen:
    """``ntkcheck <command> <args>`` as a child process, its stderr in ``log`` (a pipe could fill and block it)."""
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "ntkcheck.cli", command, *args],
                                stdout=subprocess.DEVNULL, stderr=err)
    children.append(proc)
    return proc


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120, poll: float = 0.002) -> None:
    """Poll ``condition()`` until it holds; fail if the child ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the child ended (exit {proc.returncode}) before the moment to interrupt it"
        assert time.monotonic() < deadline, "timed out waiting for the child"
        time.sleep(poll)


def kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def partial(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def checkpoint_k(folder: Path) -> int:
    return torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)["k"]


def cli(capsys, *args: str) -> tuple[int, str]:
    """The command line in this process: exit code and what it wrote to stderr."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def resume(capsys, command: str, out: Path) -> None:
    """``ntkcheck <command> --resume --out <out>`` and nothing else; it must succeed."""
    code, err = cli(capsys, command, "--resume", "--out", out)
    assert code == 0, err


def assert_clean(out: Path) -> None:
    """A finished folder: renamed, no partial folder beside it, and no temporary file, lock or records inside."""
    assert out.is_dir() and not partial(out).exists()
    left = [p for p in out.rglob("*") if p.name in (runfolder.LOCK, runfolder.RECORDS)
            or fnmatch.fnmatch(p.name, ".*.tmp") or p.name.endswith(".partial")]
    assert not left, left
    assert not list(out.parent.glob(f"{out.name}*.partial"))


def assert_same_training(out: Path, reference: Path) -> None:
    """Bit for bit: metrics.parquet without run_id, and the final checkpoint's weights."""
    a = pd.read_parquet(out / "metrics.parquet").drop(columns="run_id")
    b = pd.read_parquet(reference / "metrics.parquet").drop(columns="run_id")
    pd.testing.assert_frame_equal(a, b)
    got = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    want = torch.load(reference / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert (got["k"], got["status"]) == (want["k"], want["status"])
    assert got["params"].keys() == want["params"].keys()
    for name in want["params"]:
        assert torch.equal(got["params"][name], want["params"][name]), name
        assert torch.equal(got["W0"][name], want["W0"][name]), name


def finished_train(out: Path, reference: Path) -> None:
    assert_clean(out)
    assert_same_training(out, reference)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted tiny run (ITERS iterations), through the command line."""
    out = tmp_path_factory.mktemp("reference") / "train"
    assert main(["train", *TRAIN, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def slow_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "slow"
    assert main(["train", *SLOW, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def verify_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "verify"
    assert main(["verify", *VERIFY, "--no-figures", "--out", str(out)]) == 0
    return out


# -- train: kill -9 --------------------------------------------------------------------------------------------


@pytest.mark.slow  # child processes
@pytest.mark.parametrize("when", ["at-once", "as-the-folder-appears", "as-the-records-appear"])
def test_kill_at_start_up_then_resume_or_rerun(tmp_path, capsys, children, reference, when):
    """Killed before anything resumable exists: --resume says so (exit 2) and a plain rerun works; killed just after
    the k = 0 checkpoint: --resume works. One of the two must hold, and the run then ends as the reference."""
    out = tmp_path / "run"
    proc = spawn(children, tmp_path / "err", "train", *TRAIN, "--out", str(out))
    if when == "as-the-folder-appears":
        wait_for(partial(out).exists, proc, poll=0.0005)
    elif when == "as-the-records-appear":  # created by the k = 0 checkpoint, right before checkpoint.pt
        wait_for((partial(out) / runfolder.RECORDS).exists, proc, poll=0.0005)
    kill9(proc)
    assert not out.exists()

    resumable = (partial(out) / "checkpoint.pt").is_file()
    code, err = cli(capsys, "train", "--resume", "--out", out)
    if resumable:
        assert code == 0, err
    else:
        assert code == 2 and "--resume" in err and "no interrupted run" in err, err
        assert not out.exists()
        code, err = cli(capsys, "train", *TRAIN, "--out", out)  # the same command again
        assert code == 0, err
    finished_train(out, reference)


@pytest.mark.slow  # child processes
def test_kill_before_the_first_periodic_checkpoint(tmp_path, capsys, children, reference):
    out = tmp_path / "run"
    proc = spawn(children, tmp_path / "err", "train", *TRAIN, "--checkpoint-every", "300", "--out", str(out))
    wait_for((partial(out) / "checkpoint.pt").exists, proc)
    time.sleep(0.1)  # some iterations past k = 0, far from k = 300 (≥ 1 s away at ≥ 3 ms per iteration)
    kill9(proc)
    assert not out.exists()
    assert checkpoint_k(partial(out)) == 0 and lines(partial(out) / runfolder.RECORDS) == 0
    resume(capsys, "train", out)
    finished_train(out, reference)


@pytest.mark.slow  # child processes
@pytest.mark.parametrize("delay", [0.013, 0.171, 0.389])
def test_kill_at_a_random_moment_with_a_checkpoint_every_iteration(tmp_path, capsys, children, reference, delay):
    """With a checkpoint after every iteration most of the time goes to writing them, so a kill at an arbitrary
    moment often cuts one (a temporary file left, or records past the checkpoint); whatever it cut, the resume
    ends as the reference."""
    out = tmp_path / "run"
    proc = spawn(children, tmp_path / "err", "train", *TRAIN, "--checkpoint-every", "1", "--out", str(out))
    wait_for((partial(out) / "checkpoint.pt").exists, proc)
    time.sleep(delay)
    kill9(proc)
    work = partial(out)
    k, recorded = checkpoint_k(work), lines(work / runfolder.RECORDS)
    temporaries = [p.name for p in work.glob(".*.tmp")]
    assert recorded >= k  # the records are appended before the checkpoint that counts them
    resume(capsys, "train", out)
    finished_train(out, reference)
    print(f"killed at checkpoint k={k}: {recorded} records, temporary files {temporaries}")  # what the kill cut


def test_stale_temporary_files_and_records_past_the_checkpoint(tmp_path, capsys, reference):
    """The state a kill during a checkpoint write leaves, built directly: the last periodic checkpoint, the records of
    later iterations already appended (the last one torn), and half-written temporary files."""
    cfg = preset("small", **TINY_FIELDS)
    stored = json.loads((reference / "config.json").read_text())["config"]
    assert cfg.to_dict() == stored  # the same run as the command line's

    def kill_at_60(k, metrics):
        if k == 60:
            raise Killed

    out = tmp_path / "run"
    from ntkcheck.engine.training import train

    with pytest.raises(Killed):
        train(cfg, out, callback=kill_at_60)
    work = partial(out)
    assert checkpoint_k(work) == 50 and lines(work / runfolder.RECORDS) == 50
    records = (work / runfolder.RECORDS).read_text().splitlines(keepends=True)
    wrong = json.loads(records[-1]) | {"loss": 123.0, "F_T": -1.0}
    with open(work / runfolder.RECORDS, "a") as f:
        f.writelines([json.dumps(wrong) + "\n"] * 10)
        f.write(json.dumps(wrong)[:17])  # a line cut by the kill
    (work / ".checkpoint.pt.xyz.tmp").write_bytes(b"PK\x03\x04 half a checkpoint")
    (work / ".metrics.jsonl.k3j2.tmp").write_text(records[0])
    (work / ".config.json.a1b2.tmp").write_text("{")

    resume(capsys, "train", out)
    finished_train(out, reference)


def test_kill_between_the_last_cleanup_and_the_rename(tmp_path, capsys, reference, monkeypatch):
    """The last step of a run: runfolder.finish renames the folder, then removes .lock and metrics.jsonl. A kill
    right before the rename (simulated) must leave a run that --resume finishes."""
    cfg = preset("small", **TINY_FIELDS)
    out = tmp_path / "run"
    from ntkcheck.engine.training import train

    def killed_rename(self, target):
        raise Killed

    monkeypatch.setattr(Path, "rename", killed_rename)
    with pytest.raises(Killed):
        train(cfg, out)
    monkeypatch.undo()
    assert partial(out).is_dir() and not out.exists()
    resume(capsys, "train", out)
    finished_train(out, reference)


# -- train: signals --------------------------------------------------------------------------------------------


@pytest.mark.slow  # child processes
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_checkpoints_the_last_iteration_and_exits_130(tmp_path, capsys, children, reference, sig):
    out = tmp_path / "run"
    proc = spawn(children, tmp_path / "err", "train", *TRAIN, "--out", str(out))
    wait_for((partial(out) / "checkpoint.pt").exists, proc)
    time.sleep(0.1)  # in the loop, some iterations done, far from the end (ITERS take ≥ 1 s)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    err = (tmp_path / "err").read_text()
    assert proc.returncode == 130, err
    assert "--resume --out" in err and str(out) in " ".join(err.split()), err
    work = partial(out)
    k = checkpoint_k(work)
    assert 0 < k < ITERS and lines(work / runfolder.RECORDS) == k  # every completed iteration, no more
    assert not list(work.glob(".*.tmp"))
    if sig == signal.SIGTERM:  # the real command, in a process of its own
        resumed = subprocess.run([sys.executable, "-m", "ntkcheck.cli", "train", "--resume", "--out", str(out)],
                                 capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
    else:
        resume(capsys, "train", out)
    finished_train(out, reference)


@pytest.mark.slow  # child processes
def test_a_second_sigterm_during_the_stop_exits_at_once(tmp_path, capsys, children, slow_reference):
    """The first SIGTERM asks for a stop after the current iteration; a second one, while that iteration still runs,
    exits at once without a checkpoint. The resume starts from the last periodic checkpoint (k = 4)."""
    for attempt in range(6):  # the second signal must land inside an iteration: retried on a busy machine
        out = tmp_path / f"run{attempt}"
        proc = spawn(children, tmp_path / "err", "train", *SLOW, "--out", str(out))
        records = partial(out) / runfolder.RECORDS
        wait_for(lambda: size(records) > 0, proc, timeout=180)  # iterations 0..3 appended: checkpoint k = 4 follows
        time.sleep(0.03)  # the checkpoint is written (a few ms); iteration 4 (≥ 0.3 s) runs
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        if proc.returncode not in (130, -signal.SIGTERM):  # the iteration ended before the second signal came: the
            break  # run stopped cleanly (130) or was on its way out with the default handler back (−15); try again
    err = (tmp_path / "err").read_text()
    assert proc.returncode == 128 + signal.SIGTERM, err
    work = partial(out)
    assert checkpoint_k(work) == 4 and lines(work / runfolder.RECORDS) == 4
    resume(capsys, "train", out)
    finished_train(out, slow_reference)


# -- two processes, one --out ----------------------------------------------------------------------------------


@pytest.mark.slow  # child processes
def test_a_second_process_on_the_same_out_exits_2_and_leaves_the_first_alone(tmp_path, capsys, children, reference):
    """While the first run holds its folder (stopped with SIGSTOP so that the moment cannot pass), a second train with
    the same --out and a --resume of it both exit 2; the first run's files are untouched, and it then finishes."""
    out = tmp_path / "run"
    proc = spawn(children, tmp_path / "err", "train", *TRAIN, "--checkpoint-every", "5", "--out", str(out))
    records = partial(out) / runfolder.RECORDS
    wait_for(lambda: size(records) > 0, proc)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        time.sleep(0.05)
        before = {p: p.read_bytes() for p in partial(out).rglob("*") if p.is_file()}

        code, err = cli(capsys, "train", *TRAIN, "--checkpoint-every", "5", "--out", out)
        assert code == 2 and "--out" in err, err
        code, err = cli(capsys, "train", "--resume", "--out", out)
        assert code == 2 and "--out" in err and "in use" in err, err

        after = {p: p.read_bytes() for p in partial(out).rglob("*") if p.is_file()}
        assert after == before and not out.exists()
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    proc.wait(timeout=300)
    assert proc.returncode == 0, (tmp_path / "err").read_text()
    finished_train(out, reference)


# -- verify ----------------------------------------------------------------------------------------------------


def assert_same_verify(out: Path, reference: Path) -> None:
    assert_clean(out)
    got, want = (json.loads((f / "report.json").read_text()) for f in (out, reference))
    for report in (got, want):  # why a method ran quotes the memory available at that moment: not a measurement
        for point in report["probe_points"].values():
            point.pop("method_reason", None)
    for key in ("status", "conditions", "comparisons", "probe_points", "problem"):
        assert json.dumps(got[key], sort_keys=True) == json.dumps(want[key], sort_keys=True), key
    a = pd.read_parquet(out / "metrics.parquet").drop(columns="run_id")
    b = pd.read_parquet(reference / "metrics.parquet").drop(columns="run_id")
    pd.testing.assert_frame_equal(a, b)
    assert_same_training(out / "train", reference / "train")
    names = [sorted(p.name for p in (f / "probes").iterdir()) for f in (out, reference)]
    assert names[0] == names[1]


@pytest.mark.slow  # child processes
def test_verify_killed_during_the_first_probe(tmp_path, capsys, children, verify_reference):
    """Killed at k = 0 before probes/k000000.json exists (the probe runs right after the k = 0 checkpoint)."""
    out = tmp_path / "verify"
    proc = spawn(children, tmp_path / "err", "verify", *VERIFY, "--out", str(out))
    wait_for((partial(out) / "train.partial" / "checkpoint.pt").exists, proc)
    kill9(proc)
    assert not (partial(out) / "probes" / "k000000.json").exists()
    resume(capsys, "verify", out)
    assert_same_verify(out, verify_reference)


@pytest.mark.slow  # child processes
def test_verify_killed_during_a_later_probe(tmp_path, capsys, children, verify_reference):
    """Killed while probe k = 10 runs (right after the training checkpoint at k = 10)."""
    out = tmp_path / "verify"
    proc = spawn(children, tmp_path / "err", "verify", *VERIFY, "--out", str(out))
    records = partial(out) / "train.partial" / runfolder.RECORDS
    wait_for(lambda: size(records) > 0, proc)
    time.sleep(0.05)
    kill9(proc)
    probes = partial(out) / "probes"
    assert (probes / "k000000.json").exists() and not (probes / "k000010.json").exists()
    resume(capsys, "verify", out)
    assert_same_verify(out, verify_reference)


@pytest.mark.slow  # child processes
def test_verify_sigint_in_the_middle(tmp_path, capsys, children, verify_reference):
    out = tmp_path / "verify"
    proc = spawn(children, tmp_path / "err", "verify", *VERIFY, "--out", str(out))
    wait_for((partial(out) / "probes" / "k000020.json").exists, proc)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    err = (tmp_path / "err").read_text()
    assert proc.returncode == 130, err
    flat = " ".join(err.split())
    assert f"--resume --out {out}" in flat, err  # the verify folder, not its train/
    assert checkpoint_k(partial(out) / "train.partial") > 20
    resume(capsys, "verify", out)
    assert_same_verify(out, verify_reference)


def test_verify_killed_while_writing_K0(tmp_path, capsys, verify_reference):
    """The state of a kill during the write of probes/K0.npy at k = 0, built directly: the k = 0 training checkpoint,
    no probe file, and the first bytes of K0.npy in the temporary file the atomic write was filling."""
    from ntkcheck.apps.verify import verify

    cfg = preset("small", **VERIFY_FIELDS)
    probes = probe_preset("small", ntk_every=10, jacobian="func")
    stored = json.loads((verify_reference / "report.json").read_text())
    assert (cfg.to_dict(), probes.to_dict()) == (stored["config"], stored["probes"])

    def kill_at_0(k, metrics):
        raise Killed

    out = tmp_path / "verify"
    with pytest.raises(Killed):
        verify(cfg, probes, out, callback=kill_at_0, figures=False)
    folder = partial(out) / "probes"
    K0 = (folder / "K0.npy").read_bytes()
    for p in folder.glob("k000000.*"):
        p.unlink()
    (folder / "K0.npy").unlink()
    (folder / ".K0.npy.cut.tmp").write_bytes(K0[: len(K0) // 3])
    assert checkpoint_k(partial(out) / "train.partial") == 0
    resume(capsys, "verify", out)
    assert_same_verify(out, verify_reference)


def test_a_sigint_ended_verify_reports_the_verify_folder(tmp_path):
    """The library's Interrupted of a verify names the verify folder (what --resume --out needs)."""
    from ntkcheck.apps.verify import verify

    cfg = preset("small", N=2, d=6, b=4, width=8, T=3, e=3.0, iters=6, checkpoint_every=2)
    probes = probe_preset("small", ntk_every=2)

    def stop_at_3(k, metrics):
        if k == 3:
            raise KeyboardInterrupt

    out = tmp_path / "v"
    with pytest.raises(Interrupted) as err:
        verify(cfg, probes, out, callback=stop_at_3, figures=False)
    assert err.value.folder == out and err.value.iteration == 3
    assert checkpoint_k(partial(out) / "train.partial") == 4
    assert np.load(partial(out) / "probes" / "K0.npy").shape == (8, 8)


# -- sweeps: damaged files in the partial folder, failed cells, Ray (issue 22) -----------------------------------

SWEEP_FIELDS = {"N": 3, "d": 8, "b": 6, "width": 32, "T": 5, "iters": 6}


def _sweep_spec():
    """Six cells in batches of 2 (one problem, ``vary="init"``), float64."""
    from ntkcheck.apps.sweep import make_spec

    return make_spec("small", base=SWEEP_FIELDS, grid={"e": (1.0, 5.0, 25.0)}, seeds="0-1", vary="init",
                     record_every=1, probe_method="none", batch_size=2)


@pytest.fixture(scope="module")
def sweep_reference(tmp_path_factory):
    from ntkcheck.apps.sweep import sweep

    return sweep(_sweep_spec(), tmp_path_factory.mktemp("sweep") / "sw", figures="svg")


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garble":
        path.write_bytes(bytes(b ^ 0x5A for b in data))
    elif how == "delete":
        path.unlink()
    elif how == "other-cell":  # valid JSON, but another cell's record
        stored = json.loads(data)
        stored["row"]["cell"] = "0" * 12
        path.write_text(json.dumps(stored))


@pytest.mark.parametrize("how", ["truncate", "empty", "garble", "delete", "other-cell"])
@pytest.mark.parametrize("suffix", ["json", "parquet"])
def test_a_damaged_cell_file_is_rerun_in_its_batch_to_the_uninterrupted_bits(tmp_path, monkeypatch, sweep_reference,
                                                                             suffix, how):
    from killed import interrupt

    from ntkcheck.apps.sweep import sweep

    if suffix == "parquet" and how in ("other-cell", "delete"):
        how = "empty" if how == "delete" else "truncate"  # a parquet without its JSON is not a finished cell
    spec, out = _sweep_spec(), tmp_path / "sw"
    kept = interrupt(spec, out, 3, monkeypatch)
    damaged = runfolder.partial_folder(out) / "cells" / f"{kept[0]}.{suffix}"
    _damage(damaged, how)
    result = sweep(spec, out, figures="svg")
    pd.testing.assert_frame_equal(result.curves, sweep_reference.curves, check_exact=True)
    pd.testing.assert_frame_equal(result.cells.drop(columns="seconds"), sweep_reference.cells.drop(columns="seconds"),
                                  check_exact=True)


@pytest.mark.parametrize("name,garbage", [("plan.json", "{\"batches\": [["), ("plan.json", "[]"),
                                          ("sweep.toml", "grid = [\n"), ("sweep.toml", "\xff\xfe")])
def test_a_damaged_plan_or_spec_is_refused_naming_out_and_left_as_it_is(tmp_path, monkeypatch, capsys, name, garbage):
    from killed import interrupt

    spec, out = _sweep_spec(), tmp_path / "sw"
    interrupt(spec, out, 1, monkeypatch)
    work = runfolder.partial_folder(out)
    (work / name).write_text(garbage, errors="surrogateescape")
    before = {p.name: p.read_bytes() for p in work.rglob("*") if p.is_file() and p.name != runfolder.LOCK}
    args = ["--N", "3", "--d", "8", "--b", "6", "--width", "32", "--T", "5", "--iters", "6", "--grid", "e=1,5,25",
            "--seeds", "0-1", "--vary", "init", "--record-every", "1", "--probe-method", "none", "--batch-size", "2"]
    code = main(["sweep", *args, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error --out") and name in err and "Traceback" not in err, err
    assert {p.name: p.read_bytes() for p in work.rglob("*") if p.is_file() and p.name != runfolder.LOCK} == before


@pytest.mark.parametrize("bad", ["init_file", "device"])
def test_a_cell_that_cannot_start_fails_alone_and_the_sweep_exits_1_after_writing_everything(tmp_path, capsys, bad):
    from ntkcheck.build.experiment import initial_weights

    if bad == "device" and torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    cfg = preset("small", N=2, d=6, b=4, width=8, T=3, e=3.0)
    good = tmp_path / "good.npz"
    np.savez(good, **{k: v.numpy() for k, v in initial_weights(cfg).items()})
    grid = f"init_file={good},{tmp_path / 'absent.npz'}" if bad == "init_file" else "device=cpu,cuda"
    out = tmp_path / "sw"
    code = main(["sweep", "--N", "2", "--d", "6", "--b", "4", "--width", "8", "--T", "3", "--e", "3", "--iters", "2",
                 "--probe-method", "none", "--grid", grid, "--seeds", "0-1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "2 of 4 cells failed" in err and str(out / "cells.parquet") in err and "column error" in err, err
    cells = pd.read_parquet(out / "cells.parquet")
    assert sorted(cells.status) == ["completed"] * 2 + ["failed"] * 2
    assert cells.error[cells.status == "failed"].str.contains(bad).all()
    assert (out / "report.md").is_file() and not runfolder.partial_folder(out).exists()


def test_diverged_cells_are_results_and_exit_0(tmp_path, capsys):
    out = tmp_path / "sw"
    code = main(["sweep", "--N", "2", "--d", "6", "--b", "4", "--width", "8", "--T", "3", "--e", "3", "--iters", "3",
                 "--init", "random", "--probe-method", "none", "--grid", "lr=1e-3,1e300", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert sorted(pd.read_parquet(out / "cells.parquet").status) == ["completed", "diverged"]


def test_an_address_that_answers_but_is_not_ray_is_refused_within_the_bound(tmp_path, monkeypatch):
    """A port that accepts connections and says nothing: ``ray.init`` alone retries for over 10 minutes."""
    import socket
    import threading

    from ntkcheck.apps.sweep import ray_engine, sweep
    from ntkcheck.config import ConfigError

    monkeypatch.setattr(ray_engine, "PROBE_S", 8)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    threading.Thread(target=lambda: [server.accept() for _ in range(8)], daemon=True).start()
    started = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        sweep(_sweep_spec(), tmp_path / "sw", engine="ray", address=f"127.0.0.1:{server.getsockname()[1]}")
    server.close()
    assert info.value.field == "address" and time.perf_counter() - started < 8 + ray_engine.CONNECT_S + 5
    assert not any(tmp_path.iterdir())  # nothing left behind


def _descendants(pid: int) -> dict[int, str]:
    """pid → start time of every process under ``pid`` (from /proc)."""
    table = {}
    for name in os.listdir("/proc"):
        try:
            fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            table[int(name)] = (int(fields[1]), fields[19])
        except (OSError, ValueError, IndexError):
            pass
    found, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, start) in table.items():
            if ppid == parent and child not in found:
                found[child] = start
                todo.append(child)
    return found


@pytest.mark.slow  # a local Ray (3 s to start)
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_kill_9_of_a_ray_sweep_leaves_no_ray_process(tmp_path, children):
    """Ray's dashboard and runtime-env agents outlived a killed driver by a minute or more; the watchdog ends them."""
    pytest.importorskip("ray")
    log = tmp_path / "log"
    proc = spawn(children, log, "sweep", "--N", "8", "--d", "32", "--b", "25", "--width", "256", "--T", "10",
                 "--iters", "100000", "--grid", "lr=1e-3,1e-4", "--probe-method", "none", "--engine", "ray",
                 "--workers", "1", "--threads", "1", "--batch-size", "1", "--out", str(tmp_path / "sw"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until the task runs: every Ray process is up
        family = _descendants(proc.pid)
        names = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in family
                 if Path(f"/proc/{pid}/cmdline").exists()}
        if any(b"ray::_batch_task" in cmd for cmd in names.values()):
            break
        assert proc.poll() is None, log.read_text()
        time.sleep(0.2)
    time.sleep(1)
    family = _descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    alive = family
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = {pid: start for pid, start in family.items() if _still(pid, start)}
    assert not alive, {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:60] for pid in alive}


def _still(pid: int, start: str) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19] == start
    except (OSError, IndexError):
        return False
