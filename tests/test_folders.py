"""Run folders know their owner: a command never clears or reuses the interrupted run of another command.

Each interrupted run is a real one: a training stopped by Ctrl-C after iteration 2 (library call, the same code path),
or a verify and a sweep run to the end in a folder of their own and copied back to ``<out>.partial`` (their marker
file and everything after it are there, as after a kill just before the final rename). Every other command,
with and without ``--resume``, pointed at that ``--out`` must exit 2 naming ``--out``, name whose run it is and the
command that resumes it, and leave every file as it was; the owner then resumes and finishes it.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from ntkcheck.apps import reproduce, verify
from ntkcheck.apps.sweep import run as sweep_run
from ntkcheck.cli import main
from ntkcheck.config import TrainConfig
from ntkcheck.engine.training import train
from ntkcheck.results import runfolder
from ntkcheck.results.runfolder import Interrupted

SIZES = ["--N", "2", "--d", "6", "--b", "4", "--width", "8", "--T", "3", "--e", "3", "--threads", "1"]
COMMANDS = {
    "train": SIZES + ["--iters", "3"],
    "verify": SIZES + ["--iters", "3", "--ntk-every", "3", "--no-figures"],
    "sweep": SIZES + ["--iters", "3", "--grid", "lr=1e-3,1e-2", "--probe-method", "none"],
    "study": ["init", "--seeds", "0", "--grid", "T=3", "--grid", "lr=1e-2", "--grid", "width=8", "--threads", "1"],
}


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (the lock file aside: it only holds a pid)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != runfolder.LOCK}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished verify, sweep and study folder."""
    root = tmp_path_factory.mktemp("finished")
    for kind in ("verify", "sweep", "study"):
        assert main([kind, *COMMANDS[kind], "--out", str(root / kind)]) == 0
    return root


def stop_at_2(k, metrics):
    if k == 2:
        raise KeyboardInterrupt


def interrupted(finished: Path, kind: str, tmp_path: Path) -> Path:
    """``tmp_path/x.partial`` holding ``kind``'s interrupted run; returns ``tmp_path/x``."""
    out = tmp_path / "x"
    if kind == "train":
        cfg = TrainConfig(N=2, d=6, b=4, width=8, T=3, e=3.0, iters=3)
        with pytest.raises(Interrupted):
            train(cfg, out, callback=stop_at_2)
    else:
        shutil.copytree(finished / kind, runfolder.partial_folder(out))
    return out


def test_every_command_marks_its_folder_with_the_registered_marker():
    from ntkcheck.apps import study

    assert runfolder.MARKERS == {"train": runfolder.CHECKPOINT, "verify": verify.SETTINGS, "sweep": sweep_run.MARKER,
                                 "reproduce": reproduce.MARKER, "study": study.MARKER}


@pytest.mark.parametrize("resume", [False, True], ids=["plain", "resume"])
@pytest.mark.parametrize("owner,other", [(a, b) for a in COMMANDS for b in COMMANDS if a != b],
                         ids=lambda v: v)
def test_another_commands_interrupted_run_is_refused_and_left_as_it_is(finished, tmp_path, capsys, owner, other,
                                                                      resume):
    out = interrupted(finished, owner, tmp_path)
    before = snapshot(runfolder.partial_folder(out))
    argv = [other, *(["--resume"] if resume else COMMANDS[other]), "--out", str(out)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    line = captured.out + captured.err
    assert "--out" in line and f"ntkcheck {owner} --resume --out {out}" in line, line
    assert "Traceback" not in line
    assert snapshot(runfolder.partial_folder(out)) == before
    assert not out.exists()


@pytest.mark.parametrize("owner", list(COMMANDS))
def test_the_owner_still_resumes_its_run_after_a_refusal(finished, tmp_path, capsys, owner):
    out = interrupted(finished, owner, tmp_path)
    other = next(k for k in COMMANDS if k != owner)
    assert main([other, *COMMANDS[other], "--out", str(out)]) == 2
    assert main([owner, "--resume", "--out", str(out)]) == 0
    assert out.is_dir() and not runfolder.partial_folder(out).exists()


@pytest.mark.parametrize("kind", ["train", "verify"])  # a sweep rerun with its own spec continues by design
def test_the_same_command_without_resume_names_the_resume_command(finished, tmp_path, capsys, kind):
    out = interrupted(finished, kind, tmp_path)
    before = snapshot(runfolder.partial_folder(out))
    assert main([kind, *COMMANDS[kind], "--out", str(out)]) == 2
    assert f"ntkcheck {kind} --resume --out {out}" in "".join(capsys.readouterr())
    assert snapshot(runfolder.partial_folder(out)) == before


def test_a_partial_folder_without_any_marker_is_still_cleared(tmp_path, capsys):
    """A start killed before its marker was written left nothing resumable: the next run clears it."""
    out = tmp_path / "x"
    work = runfolder.partial_folder(out)
    work.mkdir()
    (work / "stray.txt").write_text("half a start")
    assert main(["train", *COMMANDS["train"], "--out", str(out)]) == 0
    assert out.is_dir() and not (out / "stray.txt").exists()


# -- train --continue-from, as the owner of an interrupted folder and as the other command (issue 22) ---------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished train run, to continue."""
    root = tmp_path_factory.mktemp("trained")
    assert main(["train", *COMMANDS["train"], "--out", str(root / "run")]) == 0
    return root / "run"


def interrupted_continuation(trained: Path, tmp_path: Path) -> Path:
    """``tmp_path/x.partial``: ``trained`` continued to 6 iterations, stopped by Ctrl-C after iteration 4."""
    from ntkcheck.engine.training import continue_run

    def stop_at_4(k, metrics):
        if k == 4:
            raise KeyboardInterrupt

    out = tmp_path / "x"
    with pytest.raises(Interrupted):
        continue_run(trained, out, callback=stop_at_4, iters=6)
    return out


def continue_argv(trained: Path, out: Path) -> list[str]:
    return ["train", "--continue-from", str(trained), "--iters", "6", "--threads", "1", "--out", str(out)]


@pytest.mark.parametrize("owner", list(COMMANDS))
def test_continue_from_onto_another_runs_interrupted_folder_is_refused_and_left_as_it_is(finished, trained, tmp_path,
                                                                                        capsys, owner):
    out = interrupted(finished, owner, tmp_path)
    before = snapshot(runfolder.partial_folder(out))
    assert main(continue_argv(trained, out)) == 2
    line = "".join(capsys.readouterr())
    assert "--out" in line and f"ntkcheck {owner} --resume --out {out}" in line and "Traceback" not in line, line
    assert snapshot(runfolder.partial_folder(out)) == before and not out.exists()


@pytest.mark.parametrize("resume", [False, True], ids=["plain", "resume"])
@pytest.mark.parametrize("other", ["verify", "sweep"])
def test_an_interrupted_continuation_is_refused_by_other_commands(trained, tmp_path, capsys, other, resume):
    out = interrupted_continuation(trained, tmp_path)
    before = snapshot(runfolder.partial_folder(out))
    assert main([other, *(["--resume"] if resume else COMMANDS[other]), "--out", str(out)]) == 2
    line = "".join(capsys.readouterr())
    assert "--out" in line and f"ntkcheck train --resume --out {out}" in line, line
    assert snapshot(runfolder.partial_folder(out)) == before and not out.exists()


def test_an_interrupted_continuation_refuses_a_second_continue_and_resumes_to_the_long_run(trained, tmp_path, capsys):
    out = interrupted_continuation(trained, tmp_path)
    before = snapshot(runfolder.partial_folder(out))
    assert main(continue_argv(trained, out)) == 2
    assert f"ntkcheck train --resume --out {out}" in "".join(capsys.readouterr())
    assert snapshot(runfolder.partial_folder(out)) == before
    assert main(["train", "--resume", "--out", str(out)]) == 0
    long = tmp_path / "long"
    assert main(["train", *COMMANDS["train"][:-1], "6", "--out", str(long)]) == 0
    import pandas as pd

    metrics = [pd.read_parquet(folder / "metrics.parquet").drop(columns="run_id") for folder in (out, long)]
    pd.testing.assert_frame_equal(*metrics, check_exact=True)  # bit for bit the run started with 6 iterations


@pytest.mark.parametrize("kind", ["verify", "sweep"])
def test_continue_from_a_finished_verify_or_sweep_is_refused(finished, tmp_path, capsys, kind):
    before = snapshot(finished / kind)
    assert main(continue_argv(finished / kind, tmp_path / "x")) == 2
    line = "".join(capsys.readouterr())
    assert "--continue-from" in line and "Traceback" not in line, line
    assert snapshot(finished / kind) == before and not any(tmp_path.iterdir())
