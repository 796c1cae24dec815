"""The command line: every invalid input exits 2 with one line naming the parameter; runs resume."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from ntkcheck.cli import main

TINY = ["--N", "2", "--d", "6", "--b", "4", "--width", "8", "--T", "3", "--e", "3"]


def ntkcheck(*args, cwd=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "ntkcheck.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


@pytest.mark.parametrize(
    ("args", "param"),
    [
        (["--width", "0"], "--width"),
        (["--width", "-3"], "--width"),
        (["--width", "abc"], "--width"),
        (["--T", "0"], "--T"),
        (["--b", "40"], "--b"),  # b > d = 32
        (["--b", "0"], "--b"),
        (["--e", "0"], "--e"),
        (["--e", "-1"], "--e"),
        (["--lr", "0"], "--lr"),
        (["--lr", "-1e-3"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--lr", "inf"], "--lr"),
        (["--device", "tpu"], "--device"),
        (["--dtype", "float16"], "--dtype"),
        (["--optimizer", "rmsprop"], "--optimizer"),
        (["--problem-file", "/nonexistent.npz"], "--problem-file"),
        (["--resume"], "--resume"),
        (["--threads", "0"], "--threads"),
    ],
)
def test_invalid_input_exits_2_with_one_line_naming_the_parameter(args, param, tmp_path, capsys):
    code = main(["train", *args, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert param in err
    assert len(err.strip().splitlines()) == 1, err


def test_the_installed_command_exits_2_without_a_traceback(tmp_path):
    result = ntkcheck("train", "--width", "0", "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "--width" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
def test_cuda_asked_but_absent(tmp_path):
    result = ntkcheck("train", *TINY, "--device", "cuda", "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "--device" in result.stderr and "Traceback" not in result.stderr


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = ntkcheck("train", *TINY, "--iters", "1", "--out", str(blocker / "run"))
    assert result.returncode == 2 and "--out" in result.stderr and "Traceback" not in result.stderr


def test_corrupt_checkpoint(tmp_path):
    work = tmp_path / "run.partial"
    work.mkdir()
    (work / "checkpoint.pt").write_bytes(b"this is not a checkpoint")
    result = ntkcheck("train", *TINY, "--resume", "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "--resume" in result.stderr and "corrupt" in result.stderr


def test_existing_run_is_never_overwritten(tmp_path):
    assert ntkcheck("train", *TINY, "--iters", "1", "--out", str(tmp_path / "run")).returncode == 0
    again = ntkcheck("train", *TINY, "--iters", "1", "--out", str(tmp_path / "run"))
    assert again.returncode == 2 and "--out" in again.stderr


def test_killed_run_resumes_to_the_uninterrupted_numbers(tmp_path):
    """SIGKILL (no chance to clean up) part-way, then --resume: the metrics equal an uninterrupted run's."""
    args = [*TINY, "--iters", "1500", "--checkpoint-every", "20", "--init", "random", "--lr", "1e-3"]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "ntkcheck.cli", "train", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed.partial" / "checkpoint.pt"
    deadline = time.time() + 60
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be killed")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists() and checkpoint.exists()

    resumed = ntkcheck("train", "--resume", "--out", str(out), timeout=300)  # the stored config is the truth
    assert resumed.returncode == 0, resumed.stderr
    whole = ntkcheck("train", *args, "--out", str(tmp_path / "whole"), timeout=300)
    assert whole.returncode == 0, whole.stderr
    a = pd.read_parquet(out / "metrics.parquet").drop(columns="run_id")
    b = pd.read_parquet(tmp_path / "whole" / "metrics.parquet").drop(columns="run_id")
    pd.testing.assert_frame_equal(a, b)


def test_help_lists_the_options():
    result = ntkcheck("train", "--help")
    assert result.returncode == 0
    for option in ("--width", "--T", "--lr", "--resume", "--device", "--dtype", "--on-divergence"):
        assert option in result.stdout


def test_sigterm_checkpoints_the_last_iteration_and_resume_completes(tmp_path):
    """SIGTERM: the current iteration finishes, is checkpointed, and the run exits 130; resume completes."""
    args = [*TINY, "--iters", "100000", "--checkpoint-every", "7"]
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "ntkcheck.cli", "train", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    checkpoint = tmp_path / "run.partial" / "checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline:  # the training loop (and its handler) runs
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err
    state = torch.load(tmp_path / "run.partial" / "checkpoint.pt", weights_only=True)
    done = state["k"]
    records = (tmp_path / "run.partial" / "metrics.jsonl").read_text().splitlines()
    assert done > 0 and len(records) == done  # every completed iteration, no more
    resumed = ntkcheck("train", *TINY, "--iters", str(done + 3), "--checkpoint-every", "7", "--out", str(out),
                       "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert pd.read_parquet(out / "metrics.parquet")["iteration"].max() == done + 3


def test_version_prints_the_installed_version(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ntkcheck {version('ntkcheck')}"


def test_help_groups_options_lists_choices_and_shows_flags_without_a_type(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    for panel in ("Problem", "Model", "Training", "Output", "Machine"):
        assert f"─ {panel} " in out, panel
    assert "[sgd|adam]" in out and "[float32|float64]" in out
    bias = next(line for line in out.splitlines() if "--bias" in line)
    assert "<bool>" not in bias and "--no-bias" in bias


@pytest.mark.parametrize("name, width, T", [("small", 1024, 20), ("paper", 5120, 100)])
def test_help_shows_the_defaults_of_the_preset_asked_for(name, width, T, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    assert main(["verify", "--preset", name, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"[default: {width}]" in next(line for line in out.splitlines() if "--width" in line)
    assert f"[default: {T}]" in next(line for line in out.splitlines() if "--T " in line)


def test_help_and_version_start_without_importing_torch():
    code = "import sys; from ntkcheck.cli import main; main(['--help']); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_a_presets_help_does_not_change_the_next_commands_defaults(tmp_path, capsys):
    assert main(["verify", "--preset", "paper", "--help"]) == 0
    assert main(["train", "--N", "2", "--d", "6", "--b", "4", "--width", "8", "--T", "3", "--iters", "1",
                 "--out", str(tmp_path / "r")]) == 0
    config = __import__("json").loads((tmp_path / "r" / "config.json").read_text())["config"]
    assert config["e"] == 50.0 and config["iters"] == 1  # the small preset's e, not the paper's 100
