"""Bad input to ``ntkcheck study`` (the battery of tests/test_bad_input.py, for the studies): exit code 2, one line that
names the parameter as the user wrote it, no traceback, and nothing left behind (no ``--out`` folder, no partial
one); a few cases then run the tiny correct command into the same ``--out``, which must succeed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_bad_input import assert_one_clean_line

from ntkcheck.cli import main

TINY = ["init", "--seeds", "0-1", "--grid", "T=3", "--grid", "lr=1e-3", "--threads", "1"]  # 10 cells, seconds


def case(*args: str, flag: str, id: str | None = None, name: bool = True, out: bool = True, follow: bool = False,
         contains: tuple[str, ...] = ()):
    """``ntkcheck study`` with the tiny init study (``name``: its NAME and sizes first), then ``args`` (``@out``: the
    case's output folder, ``@finished``: a finished tiny init study, ``@file``: a file)."""
    argv = ["study", *(TINY if name else []), *args]
    if out and "--out" not in args:
        argv += ["--out", "@out"]
    return pytest.param(argv, flag, follow, contains, id=id or " ".join(args).replace("@", "") or "no args")


CASES = [
    case("bogus", flag="NAME", name=False, contains=("init, stability, width, objectives, momentum",),
         id="unknown study"),
    case(flag="NAME", name=False, contains=("choose one of",), id="no study"),
    case("--grid", "L=3,4", flag="--grid", contains=("its axes are init, T, lr",), follow=True),
    case("--grid", "wdith=3", flag="--grid", contains=("not an axis of the init study",)),
    case("--grid", "seed=1,2", flag="--grid"),
    case("--grid", "T=x", flag="--grid"),
    case("--grid", "T", flag="--grid"),
    case("--grid", "=3", flag="--grid"),
    case("--grid", "T=0", flag="--grid", contains=("nothing to run",), id="--grid T=0 (every cell invalid)"),
    case("--size", "big", flag="--size", contains=("small, paper",), follow=True),
    case("--size", "Small", flag="--size"),
    *[case("--seeds", seeds, flag="--seeds") for seeds in ("4-2", "a", "-1", "1,1", "0-x", "0-1000000000",
                                                           str(2**64))],
    case("--engine", "spark", flag="--engine", follow=True),
    case("--address", "ray://nowhere:1", flag="--address", id="--address without ray"),
    case("--engine", "ray", "--address", "127.0.0.1:1", flag="--address", contains=("nothing answers",),
         id="--engine ray --address of a closed port"),
    case("--engine", "ray", "--address", "nowhere", flag="--address", id="--engine ray --address malformed"),
    case("--workers", "2", flag="--workers", id="--workers without ray"),
    *[case("--engine", "ray", "--workers", w, flag="--workers") for w in ("0", "-2", "abc")],
    case("--threads", "0", flag="--threads"),
    case("--format", "bmp", flag="--format"),
    case("--resume", flag="--resume", out=False, id="--resume without --out"),
    case("--resume", flag="--resume", id="--resume nothing to resume"),
    case("--resume", flag="--resume", name=False, contains=("no interrupted study",),
         id="--resume without NAME, nothing to resume"),
    case("--out", "", flag="--out", id="--out ''"),
    case("--out", "@file", flag="--out", id="--out a file"),
    # a finished study is never rerun with another plan
    case("--out", "@finished", "--seeds", "0-2", flag="--seeds", contains=("give a new --out",),
         id="finished study, other seeds"),
    case("--out", "@finished", "--grid", "T=4", flag="--grid", id="finished study, other grid"),
    case("--out", "@finished", "--size", "paper", flag="--size", id="finished study, other size"),
    pytest.param(["study", "momentum", "--seeds", "0-1", "--grid", "lr=1e-3", "--out", "@finished"], "NAME", False, (),
                 id="finished init study, another study"),
    # another command's interrupted run
    case("--out", "@sweep_partial", flag="--out", contains=("ntkcheck sweep",), id="a sweep's partial folder"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study_files")
    (root / "file").write_text("not a folder\n")
    assert main(["study", *TINY, "--out", str(root / "finished")]) == 0
    (root / "sweep_partial.partial").mkdir()
    (root / "sweep_partial.partial" / "sweep.toml").write_text('preset = "small"\n')
    return root


@pytest.fixture(autouse=True)
def _in_a_scratch_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _argv(argv: list[str], files: Path, out: Path) -> list[str]:
    return [str(out) if a == "@out" else re.sub(r"@(\S+)", lambda m: str(files / m.group(1)), a) for a in argv]


@pytest.mark.parametrize(("argv", "flag", "follow", "contains"), CASES)
def test_bad_study_input_exits_2_with_one_line_naming_the_flag(argv, flag, follow, contains, files, tmp_path, capsys):
    out = tmp_path / "study"
    finished = sorted(p.name for p in (files / "finished").rglob("*"))
    code = main(_argv(argv, files, out))
    assert_one_clean_line(code, capsys.readouterr().err, flag, contains)
    assert not out.exists() and not out.with_name("study.partial").exists()  # nothing left behind
    assert sorted(p.name for p in (files / "finished").rglob("*")) == finished  # nothing changed
    assert (files / "sweep_partial.partial" / "sweep.toml").is_file()
    if follow:
        assert main(["study", *TINY, "--out", str(out)]) == 0, capsys.readouterr().err[-2000:]
        assert (out / "report.md").is_file() and not out.with_name("study.partial").exists()


def test_the_battery_covers_the_issues_cases():
    ids = " ".join(p.id for p in CASES)
    assert len(CASES) >= 30
    for words in ("unknown study", "L=3,4", "finished study, other seeds", "--engine spark", "--address"):
        assert words in ids
