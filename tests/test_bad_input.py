"""Bad input, over every command: exit code 2, one line that names the parameter as the user wrote it (its flag),
no traceback, and nothing left behind that blocks the next correct command with the same ``--out``.

Most cases call ``ntkcheck.cli.main`` in-process (fast); ``test_no_traceback_reaches_the_terminal`` runs a few
through ``python -m ntkcheck.cli``; the sizes that would not fit in memory run in one child process whose address
space is capped (RLIMIT_AS), so that a missing size check fails fast instead of swapping.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ntkcheck.cli import main
from ntkcheck.models import init as inits
from ntkcheck.problems import qp as problems

SIZES = ["--N", "2", "--d", "6", "--b", "4", "--width", "8", "--T", "3", "--e", "3"]
TINY = {  # the smallest correct command of each kind, followed by the bad options of a case
    "train": SIZES + ["--iters", "2"],
    "verify": SIZES + ["--iters", "2", "--ntk-every", "1", "--no-figures"],
    "ntk": SIZES,
    "bounds": SIZES,
    "reproduce": [],
    "sweep": SIZES + ["--iters", "2", "--grid", "lr=1e-3,1e-2", "--probe-method", "none"],
}
WITH_OUT = ("train", "verify", "ntk", "reproduce", "sweep")
CAP = 4 * 2**30  # bytes of address space for the child that runs the huge sizes
HUGE_SECONDS = 10  # a huge case not refused within this long counts as a failure


def case(command: str, *args: str, flag: str, id: str | None = None, follow: bool = True, out: bool = True,
         contains: tuple[str, ...] = (), absent: tuple[str, ...] = ()):
    """One bad command line: ``command`` with the tiny sizes, then ``args`` (``@name`` is the file ``name`` of the
    ``files`` fixture, ``@out`` the case's output folder). ``flag``: the parameter the error line must name
    (``|`` separates alternatives); ``follow``: afterwards the tiny correct command with the same ``--out`` must
    succeed; ``out``: add ``--out @out``; ``contains``/``absent``: text the line must (not) hold."""
    argv = [command, *args] if command == "reproduce" else [command, *TINY[command], *args]
    if out and command in WITH_OUT and "--out" not in args:
        argv += ["--out", "@out"]
    follow = follow and command in WITH_OUT and command != "reproduce" and "--out" in argv
    return pytest.param(argv, flag, follow, contains, absent,
                        id=id or f"{command} {' '.join(args)}".replace("@", ""))


def number_cases(command: str, option: str, bad: tuple[str, ...], **kw):
    return [case(command, option, value, flag=option, **kw) for value in bad]


INTS = ("0", "-1", "nan", "inf", "abc", "2.5")
FLOATS = ("0", "-1", "nan", "inf", "abc", "-inf")
CASES = [
    # -- train: every numeric option at 0, negative, nan, inf, non-number, fraction --------------------------------
    *[c for opt in ("--N", "--d", "--b", "--width", "--T", "--iters", "--checkpoint-every", "--threads")
      for c in number_cases("train", opt, INTS)],
    *number_cases("train", "--L", ("1", "0", "-1", "nan", "abc")),
    *number_cases("train", "--seed", ("-1", "nan", "inf", "abc", "2.5")),
    *[c for opt in ("--e", "--lr", "--step-scale", "--saturation-tol") for c in number_cases("train", opt, FLOATS)],
    case("train", "--eta", "-1", flag="--lr|--eta"),
    case("train", "--step-scale", "2", flag="--step-scale"),
    case("train", "--step-scale", "1e300", flag="--step-scale"),
    case("train", "--saturation-tol", "1", flag="--saturation-tol"),
    case("train", "--saturation-tol", "1e300", flag="--saturation-tol"),
    case("train", "--b", "7", flag="--b"),  # b > d = 6
    case("train", "--threads", "100000000000000000000", flag="--threads"),
    *number_cases("train", "--max-memory", ("0", "-1", "nan", "abc")),
    case("train", "--max-memory", "1000", flag="--width|--N|--d|--b|--T|--iters|--L", id="train --max-memory 1000"),
    # -- train: every choice option with a wrong value ---------------------------------------------------------
    *[case("train", opt, "bogus", flag=opt) for opt in ("--preset", "--init", "--wide-layer", "--optimizer", "--loss",
                                                        "--on-divergence", "--dtype", "--device")],
    case("train", "--dtype", "float16", flag="--dtype"),
    case("train", "--wide-layer", "angular", "--bias", flag="--wide-layer"),
    # -- train: --draw (the authors' draws, a compatibility mode) ----------------------------------------------
    case("train", "--draw", "bogus", flag="--draw"),
    *[case("train", "--draw", name, flag="--draw") for name in ("small-official", "paper-official")],  # presets
    *[case("train", "--preset", name, flag="--preset") for name in ("official", "small_official", "paper-code")],
    case("train", "--draw", "paper", "--L", "4", flag="--draw", contains=("L = 4",)),
    case("train", "--preset", "small-official", "--init", "random", flag="--draw", contains=("init = 'random'",)),
    # -- train: runs and folders -------------------------------------------------------------------------------
    case("train", "--out", "", flag="--out", follow=False, id="train --out ''"),
    case("train", "--out", "@file", flag="--out", follow=False, id="train --out a-file"),
    case("train", "--out", "@file/run", flag="--out", follow=False, id="train --out under-a-file"),
    case("train", "--out", "@busy", flag="--out", follow=False, id="train --out non-empty-folder"),
    case("train", "--resume", flag="--resume", out=False, id="train --resume without --out"),
    case("train", "--resume", flag="--resume", id="train --resume with nothing to resume"),
    case("train", "--continue-from", "@finished", flag="--iters", contains=("0..2",),
         id="train --continue-from without more iterations"),
    case("train", "--continue-from", "@finished", "--iters", "5", "--resume", flag="--continue-from",
         contains=("--resume",), id="train --continue-from with --resume"),
    case("train", "--continue-from", "@finished", "--iters", "5", "--e", "4", flag="--e",
         id="train --continue-from changing e"),
    case("train", "--continue-from", "@diverged", "--iters", "9", flag="--continue-from", contains=("diverged",),
         id="train --continue-from a diverged run"),
    *[case("train", "--continue-from", f"@{name}", "--iters", "5", flag="--continue-from",
           id=f"train --continue-from {why}")
      for name, why in [("busy", "a folder that is not a run"), ("file", "a file"), ("absent", "a missing path"),
                        ("finished/checkpoint.pt", "a run's checkpoint file")]],
    # -- input files (ntkcheck/results/io.py, problems.py, init.py) ------------------------------------------------------
    *[case("train", "--problem-file", f"@{name}", flag="--problem-file", contains=tuple(words),
           id=f"train --problem-file {why}")
      for name, why, words in [
          ("absent.npz", "missing", ["does not exist"]),
          ("folder.npz", "a directory", ["directory"]),
          ("fifo.npz", "a fifo", ["not a regular file"]),
          ("qp.txt", "wrong suffix", [".npz or .pt"]),
          ("random.npz", "random bytes .npz", ["not a readable .npz"]),
          ("random.pt", "random bytes .pt", ["not a readable .pt"]),
          ("strings.pt", "strings .pt", ["str"]),
          ("objects.pt", "dict of non-tensors", ["not an array of numbers"]),
          ("string.pt", "a string .pt", ["dict"]),
          ("module.pt", "pickled module", ["Python objects"]),
          ("unicode.npz", "text arrays", ["not numbers"]),
          ("objects.npz", "object arrays", ["Python objects"]),
          ("textzip.npz", "a zip without arrays", ["not a readable .npz"]),
          ("zero.npz", "an empty .npz", ["not a readable .npz"]),
          ("zero.pt", "an empty .pt", ["not a readable .pt"]),
          ("huge.npz", "M times 1e200", ["β", "overflows"]),
          ("huge_y.npz", "Y times 1e160", ["½‖y_i‖²", "overflows"]),
          ("complex.npz", "complex M", ["real"]),
          ("b_gt_d.npz", "b > d in the file", ["b = 20", "d = 12"]),
          ("noY.npz", "no Y", ["missing: Y"]),
          ("nan.npz", "NaN in M", ["finite"]),
          ("badY.npz", "Y of the wrong shape", ["Y must have shape"]),
          ("empty.npz", "no instances", ["at least one"]),
      ]],
    case("train", "--problem-file", "@f32.npz", "--dtype", "float32", flag="--dtype", contains=("float32",),
         id="train --problem-file overflowing float32 --dtype float32"),
    *[case("train", "--init-file", f"@{name}", flag="--init-file", contains=tuple(words), id=f"train --init-file {why}")
      for name, why, words in [
          ("absent.pt", "missing", ["does not exist"]),
          ("folder.npz", "a directory", ["directory"]),
          ("w_extra.pt", "an extra W4", ["W4"]),
          ("w_bias.pt", "biases without --bias", ["b1"]),
          ("w_complex.pt", "complex", ["real"]),
          ("w_shape.pt", "wrong shape", ["W2 must have shape"]),
          ("w_missing.pt", "no W3", ["no array W3"]),
          ("w_nan.npz", "NaN", ["finite"]),
          ("random.pt", "random bytes", ["not a readable .pt"]),
      ]],
    # -- verify -------------------------------------------------------------------------------------------------
    *number_cases("verify", "--ntk-every", ("-1", "nan", "abc")),
    *number_cases("verify", "--fit-early", ("1", "0", "-5", "abc")),
    *[case("verify", opt, "bogus", flag=opt) for opt in ("--ntk-method", "--jacobian", "--alpha-steps", "--preset",
                                                          "--linearised")],
    case("verify", "--width", "0", flag="--width"),
    case("verify", "--lr", "nan", flag="--lr"),
    case("verify", "--problem-file", "@b_gt_d.npz", flag="--problem-file", contains=("b = 20",), absent=("--b ",)),
    case("verify", "--init-file", "@w_extra.pt", flag="--init-file", contains=("W4",)),
    case("verify", "--resume", flag="--resume", id="verify --resume with nothing to resume"),
    case("verify", "--out", "", flag="--out", follow=False, id="verify --out ''"),
    case("verify", "--checkpoint-every", "0", flag="--checkpoint-every"),
    case("verify", "--max-memory", "-1", flag="--max-memory"),
    case("verify", "--max-memory", "-inf", flag="--max-memory"),
    *[case("verify", "--jacobian", "structured", *more, flag="--jacobian")
      for more in (["--wide-layer", "dense"], ["--bias"])],
    # -- ntk ----------------------------------------------------------------------------------------------------
    *number_cases("ntk", "--alpha-step", ("0", "99", "-1", "abc")),
    case("ntk", "--method", "bogus", flag="--method"),
    case("ntk", "--method", "structured", "--wide-layer", "dense", flag="--method"),
    case("ntk", "--run", "@busy", flag="--run", id="ntk --run a-folder-that-is-not-a-run"),
    case("ntk", "--run", "@absent_run", flag="--run", id="ntk --run missing"),
    case("ntk", "--run", "@file", flag="--run", id="ntk --run a-file"),
    case("ntk", "--width", "0", flag="--width"),
    case("ntk", "--T", "-2", flag="--T"),
    case("ntk", "--e", "inf", flag="--e"),
    case("ntk", "--problem-file", "@complex.npz", flag="--problem-file"),
    case("ntk", "--init-file", "@w_extra.pt", flag="--init-file"),
    case("ntk", "--out", "", flag="--out", follow=False, id="ntk --out ''"),
    case("ntk", "--threads", "0", flag="--threads"),
    # -- bounds -------------------------------------------------------------------------------------------------
    case("bounds", "--T", "0", flag="--T"),
    case("bounds", "--L", "1", flag="--L"),
    case("bounds", "--e", "0", flag="--e"),
    case("bounds", "--e", "nan", flag="--e"),
    case("bounds", "--width", "-4", flag="--width"),
    case("bounds", "--N", "abc", flag="--N"),
    case("bounds", "--d", "0", flag="--d"),
    case("bounds", "--b", "40", flag="--b"),
    case("bounds", "--lr", "inf", flag="--lr"),
    case("bounds", "--step-scale", "2", flag="--step-scale"),
    case("bounds", "--seed", "-1", flag="--seed"),
    *number_cases("bounds", "--C", ("0", "-1", "nan", "inf", "abc")),
    # -- reproduce ----------------------------------------------------------------------------------------------
    case("reproduce", "fig99", flag="FIGURE"),
    case("reproduce", "fig2", "--preset", "bogus", flag="--preset"),
    case("reproduce", "fig2", "--seed", "-1", flag="--seed"),
    case("reproduce", "fig2", "--threads", "0", flag="--threads"),
    case("reproduce", "fig2", "--out", "", flag="--out", id="reproduce fig2 --out ''"),
    # -- sweep --------------------------------------------------------------------------------------------------
    case("train", "--init-seed", "-1", flag="--init-seed"),
    case("train", "--init-seed", "abc", flag="--init-seed"),
    *[case("sweep", "--grid", axis, flag="--grid") for axis in ("bogus=1", "e=1,x", "e", "=1", "e=", "seed=1,2",
                                                                "init_seed=3", "lr=1", "width=2.5", "bias=maybe",
                                                                "eta=x", "eta=1e-4")],
    *[case("sweep", "--seeds", seeds, flag="--seeds") for seeds in ("4-2", "a", "-1", "1,1", "0-x")],
    case("sweep", "--vary", "weights", flag="--vary"),
    case("sweep", "--spec", "@absent.toml", flag="--spec", id="sweep --spec missing"),
    case("sweep", "--spec", "@bad.toml", flag="--spec", id="sweep --spec not-toml"),
    case("sweep", "--spec", "@typo.toml", flag="--spec", id="sweep --spec unknown-key"),
    case("sweep", "--spec", "@grid_scalar.toml", flag="--spec", id="sweep --spec grid-not-a-table"),
    case("sweep", "--spec", "@folder.npz", flag="--spec", id="sweep --spec a-folder"),
    case("sweep", "--spec", "@badaxis.toml", flag="--grid", id="sweep --spec bad-axis"),
    case("sweep", "--spec", "@badlin.toml", flag="--spec", contains=("linearised: must be true or false",),
         id="sweep --spec linearised-not-bool"),
    case("sweep", "--spec", "@badpoints.toml", flag="--spec", contains=("points: 'bogus'",), id="sweep --spec bad-point"),
    case("sweep", "--spec", "@pointseed.toml", flag="--spec", contains=("seed must be",), id="sweep --spec point-seed"),
    *number_cases("sweep", "--record-every", ("-1", "abc", "2.5")),
    *[case("sweep", "--probe-at", at, flag="--probe-at") for at in ("0,x", "-3", "K,2.5")],
    case("sweep", "--probe-method", "svd", flag="--probe-method"),
    *number_cases("sweep", "--batch-size", ("0", "-1", "abc")),
    case("sweep", "--engine", "spark", flag="--engine"),
    case("sweep", "--address", "ray://nowhere:1", flag="--address"),
    *number_cases("sweep", "--workers", ("0", "-2", "abc")),
    case("sweep", "--threads", "0", flag="--threads"),
    case("sweep", "--iters", "0", flag="--iters"),
    case("sweep", "--width", "abc", flag="--width"),
    case("sweep", "--preset", "bogus", flag="--preset"),
    case("sweep", "--max-memory", "1000", flag="--width|--N|--d|--b|--T|--iters|--L", id="sweep --max-memory 1000"),
    case("sweep", "--resume", flag="--resume", out=False, id="sweep --resume without --out"),
    case("sweep", "--resume", flag="--resume", id="sweep --resume nothing-to-resume"),
    case("sweep", "--out", "", flag="--out", follow=False, id="sweep --out ''"),
    case("sweep", "--out", "@file", flag="--out", follow=False, id="sweep --out a-file"),
    # -- output formats ---------------------------------------------------------------------------------------
    case("verify", "--format", "gif", flag="--format"),
    case("sweep", "--format", "bmp", flag="--format"),
    case("verify", "--json", "--csv", flag="--json"),
    case("bounds", "--json", "--csv", flag="--json"),
    case("ntk", "--json", "--csv", flag="--json"),
    # -- --model lstm (issue 21) --------------------------------------------------------------------------------
    case("train", "--model", "rnn", flag="--model", id="train --model rnn (not lstm)"),
    case("verify", "--model", "rnn", flag="--model", id="verify --model rnn (not lstm)"),
    case("train", "--model", "lstm", "--wide-layer", "angular", flag="--wide-layer"),
    case("train", "--model", "lstm", "--wide-layer", "dense", flag="--wide-layer"),
    case("verify", "--model", "lstm", "--jacobian", "structured", flag="--jacobian"),
    case("ntk", "--model", "lstm", "--method", "structured", flag="--method"),
    case("train", "--model", "lstm", "--lstm-hidden", "0", flag="--lstm-hidden"),
    case("verify", "--model", "lstm", "--lstm-layers", "-1", flag="--lstm-layers"),
    case("train", "--model", "lstm", "--lstm-variant", "X", flag="--lstm-variant"),
    case("train", "--model", "lstm", "--init", "random", flag="--init"),
    case("train", "--model", "lstm", "--bias", flag="--bias"),
    case("ntk", "--model", "lstm", "--draw", "paper", flag="--draw"),
    # -- objectives, backbones and initialisations beyond the theorem (issue 23) -----------------------------------
    case("train", "--problem", "svm", flag="--problem"),
    case("sweep", "--problem", "QP", flag="--problem"),
    case("train", "--update", "adam", flag="--update"),
    case("verify", "--update", "prox", flag="--update", contains=("gd",), id="verify --update prox on qp (no prox)"),
    case("train", "--update", "fista", flag="--update", contains=("nag",), id="train --update fista on qp (no prox)"),
    case("train", "--problem", "logistic", "--penalty", "l2", "--update", "prox", flag="--update",
         id="train --update prox on l2 logistic (smooth)"),
    case("train", "--lam", "0.1", flag="--lam", id="train --lam on qp"),
    case("ntk", "--sparsity", "0.2", flag="--sparsity", id="ntk --sparsity on qp"),
    case("train", "--lam-scale", "absolute", flag="--lam-scale", id="train --lam-scale on qp"),
    case("train", "--problem", "lasso", "--lam", "0", flag="--lam"),
    case("train", "--problem", "lasso", "--lam", "-1", flag="--lam"),
    case("verify", "--problem", "lasso", "--lam", "nan", flag="--lam"),
    case("train", "--problem", "lasso", "--lam-scale", "percent", flag="--lam-scale"),
    case("train", "--problem", "lasso", "--sparsity", "0", flag="--sparsity"),
    case("train", "--problem", "logistic", "--sparsity", "1.5", flag="--sparsity"),
    case("train", "--problem", "lasso", "--penalty", "l2", flag="--penalty", id="train --penalty on lasso"),
    case("train", "--problem", "logistic", "--penalty", "l3", flag="--penalty"),
    case("train", "--problem", "lasso", "--problem-file", "@good.npz", flag="--problem-file",
         id="train --problem lasso --problem-file (a QP file)"),
    case("verify", "--problem", "logistic", "--draw", "paper", flag="--draw", id="verify --problem logistic --draw paper"),
    case("train", "--model", "lstm", "--update", "nag", flag="--update", id="train --model lstm --update nag"),
    case("train", "--model", "lstm", "--problem", "lasso", flag="--problem", id="train --model lstm --problem lasso"),
    case("train", "--init", "kaiming", flag="--init"),
    case("train", "--model", "lstm", "--init", "xavier", flag="--init", id="train --model lstm --init xavier"),
    case("sweep", "--grid", "update=prox,fista", flag="--grid", id="sweep --grid update=prox,fista on qp (every cell invalid)"),
    case("sweep", "--grid", "lam=0.1,0.2", flag="--grid", id="sweep --grid lam on qp (every cell invalid)"),
    # -- sizes and combinations that were silently accepted or crashed late (issue 22) -------------------------------
    case("sweep", "--seeds", "0-1000000000", flag="--seeds", contains=("100000",), id="sweep --seeds 10^9 seeds"),
    case("sweep", "--seeds", "0-99999,100000-100001", flag="--seeds", id="sweep --seeds over the cap in two ranges"),
    case("sweep", "--seeds", str(2**64), flag="--seeds", contains=("int64",), id="sweep --seeds 2^64"),
    case("sweep", "--grid", "lr=1e-3,1e-2", "--seed", str(2**64), flag="--seed", id="sweep --seed 2^64"),
    case("train", "--seed", str(2**63), flag="--seed", id="train --seed 2^63"),
    case("train", "--init-seed", str(2**64), flag="--init-seed", id="train --init-seed 2^64"),
    case("sweep", "--grid", "e=" + ",".join(str(i + 1) for i in range(400)), "--grid",
         "lr=" + ",".join(f"{i + 1}e-9" for i in range(400)), flag="--grid", id="sweep a 160000-cell grid"),
    case("sweep", "--workers", "2", flag="--workers", id="sweep --workers without ray"),
    *[case("sweep", "--grid", grid, flag="--grid", id=f"sweep --grid {grid} (every cell invalid)")
      for grid in ("width=0,-1", "b=20", "dtype=float16")],
    case("sweep", "--probe-at", "0,5", flag="--probe-at", id="sweep --probe-at beyond iters"),
    case("sweep", "--grid", "iters=2,3", "--probe-at", "4", flag="--probe-at", id="sweep --probe-at beyond every iters"),
    case("train", "--draw", "paper", "--problem-file", "@good.npz", flag="--draw", id="train --draw paper --problem-file"),
    case("verify", "--draw", "paper", "--problem-file", "@good.npz", flag="--draw",
         id="verify --draw paper --problem-file"),
    # -- Ray addresses: refused before any folder exists, in seconds (issue 22) ---------------------------------
    *[case("sweep", "--engine", "ray", "--address", address, flag="--address", contains=("host:port",),
           id=f"sweep --engine ray --address {address!r} (malformed)")
      for address in ("garbage", "host:", ":6379", "host:0", "host:99999", "host:port", "http://host:6379", "ray://",
                      "local", "a b:1", "")],
    case("sweep", "--engine", "ray", "--address", "127.0.0.1:1", flag="--address", contains=("nothing answers",),
         id="sweep --engine ray --address of a closed port"),
    case("sweep", "--engine", "ray", "--address", "127.0.0.1:1", "--workers", "2", flag="--workers",
         id="sweep --workers with --address"),
    # -- memory advice in the command line's spelling: following it must work (issue 22) -------------------------
    *[case(command, "--max-memory", "1000", flag="--width|--N|--d|--b|--T|--iters|--L",
           contains=("--max-memory inf",), absent=("max_memory", "lower T", "lower iters"),
           id=f"{command} --max-memory 1000 advises --max-memory inf") for command in ("train", "verify", "sweep")],
    case("verify", "--max-memory", "1000", "--ntk-method", "dense", "--N", "60", "--b", "6", flag="--N|--b|--d|--T",
         absent=("max_memory", "ntk_method="), id="verify --max-memory 1000 dense: hints in flags"),
    # -- per-cell failures that leave no cell to run: refused before any folder (issue 22) -----------------------
    case("sweep", "--grid", "init_file=@absent.npz,@w_shape.pt", flag="--grid", contains=("no cell",),
         id="sweep --grid init_file where no file loads"),
    case("sweep", "--init-file", "@w_missing.pt", flag="--init-file", contains=("no cell",),
         id="sweep --init-file that does not load"),
    case("sweep", "--grid", "width=100000000,200000000", "--max-memory", "1e8", flag="--grid", contains=("no cell",),
         id="sweep every cell over --max-memory"),
    *([case("sweep", "--grid", "device=cuda", flag="--grid", id="sweep --grid device=cuda without CUDA"),
       case("sweep", "--device", "cuda", flag="--device", id="sweep --device cuda without CUDA")]
      if not torch.cuda.is_available() else []),
    # -- bounds --preset (issue 22) -------------------------------------------------------------------------------
    *[case("bounds", "--preset", name, flag="--preset", id=f"bounds --preset {name}") for name in ("bogus", "")],
    case("bounds", "--preset", "paper", "--b", "600", flag="--b", id="bounds --preset paper --b 600 (b > d)"),
    # -- a refused --continue-from leaves no folder (issue 22) ----------------------------------------------------
    case("train", "--continue-from", "@with_init", "--iters", "5", flag="--init-file", contains=("changed",),
         id="train --continue-from a run whose init file changed"),
    case("train", "--continue-from", "@finished", "--iters", "5", "--max-memory", "1000",
         flag="--width|--N|--d|--b|--T|--iters|--L", contains=("--max-memory inf",),
         id="train --continue-from over --max-memory"),
    case("train", "--continue-from", "@finished", "--iters", "5", "--out", "@finished", flag="--out",
         follow=False, id="train --continue-from into the finished folder itself"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Every bad file the cases use, once."""
    root = tmp_path_factory.mktemp("files")
    p = problems.generate(2, 6, 4, seed=0)
    M, Y = p.M.numpy(), p.Y.numpy()
    (root / "folder.npz").mkdir()
    os.mkfifo(root / "fifo.npz")
    (root / "qp.txt").write_text("1 2 3\n")
    (root / "file").write_text("not a folder\n")
    (root / "busy").mkdir()
    (root / "busy" / "notes.txt").write_text("someone else's\n")
    rng = np.random.default_rng(0)
    (root / "random.npz").write_bytes(rng.bytes(600))
    (root / "random.pt").write_bytes(rng.bytes(600))
    torch.save({"M": "abc", "Y": "def"}, root / "strings.pt")
    torch.save({"M": {"a": 1}, "Y": None}, root / "objects.pt")
    torch.save("just a string", root / "string.pt")
    torch.save({"M": torch.nn.Linear(2, 2), "Y": p.Y}, root / "module.pt")
    np.savez(root / "unicode.npz", M=np.array(["a", "b"]), Y=Y)
    np.savez(root / "objects.npz", M=np.array([object(), 1], dtype=object), Y=Y)
    with zipfile.ZipFile(root / "textzip.npz", "w") as z:
        z.writestr("M.txt", "hello")
    (root / "zero.npz").write_bytes(b"")
    (root / "zero.pt").write_bytes(b"")
    np.savez(root / "huge.npz", M=M * 1e200, Y=Y * 1e200)
    np.savez(root / "huge_y.npz", M=M, Y=Y * 1e160)
    np.savez(root / "f32.npz", M=M * 1e25, Y=Y)
    np.savez(root / "complex.npz", M=M + 1j * M, Y=Y)
    np.savez(root / "b_gt_d.npz", M=rng.standard_normal((2, 20, 12)), Y=rng.standard_normal((2, 20)))
    np.savez(root / "noY.npz", M=M)
    np.savez(root / "nan.npz", M=np.where(M > 0.5, np.nan, M), Y=Y)
    problems.save(problems.generate(2, 6, 4, 0), root / "good.npz")  # a valid file
    np.savez(root / "badY.npz", M=M, Y=Y[:, :3])
    np.savez(root / "empty.npz", M=np.zeros((0, 4, 6)), Y=np.zeros((0, 4)))
    w = inits.deterministic((2, 8), 3.0, 0)
    torch.save({**w, "W4": torch.zeros(8, 1)}, root / "w_extra.pt")
    torch.save({**w, "b1": torch.zeros(2), "b2": torch.zeros(8), "b3": torch.zeros(1)}, root / "w_bias.pt")
    torch.save({k: v.to(torch.complex128) for k, v in w.items()}, root / "w_complex.pt")
    torch.save({**w, "W2": torch.zeros(2, 9)}, root / "w_shape.pt")
    torch.save({k: v for k, v in w.items() if k != "W3"}, root / "w_missing.pt")
    np.savez(root / "w_nan.npz", **{k: v.numpy() for k, v in w.items()} | {"W1": np.full((2, 2), np.nan)})
    (root / "bad.toml").write_text("grid = [\n")
    (root / "typo.toml").write_text("seed = [0, 1]\n")
    (root / "grid_scalar.toml").write_text("grid = 3\n")
    (root / "badaxis.toml").write_text("[grid]\nwdith = [1, 2]\n")
    (root / "badlin.toml").write_text('linearised = "yes"\n')
    (root / "badpoints.toml").write_text("[[points]]\nbogus = 1\n")
    (root / "pointseed.toml").write_text("[[points]]\nseed = -1\n")
    assert main(["train", *TINY["train"], "--out", str(root / "finished")]) == 0
    w_init = {k: v.numpy() for k, v in w.items()}
    np.savez(root / "w_init.npz", **w_init)
    assert main(["train", *TINY["train"], "--init-file", str(root / "w_init.npz"), "--out", str(root / "with_init")]) == 0
    np.savez(root / "w_init.npz", **w_init | {"W1": 2 * w_init["W1"]})  # changed since the run was trained
    assert main(["train", *TINY["train"], "--lr", "1e300", "--init", "random", "--out", str(root / "diverged")]) == 0
    return root


@pytest.fixture(autouse=True)
def _in_a_scratch_folder(tmp_path, monkeypatch):
    """Whatever a command writes by default (runs/…, or '.') lands in the test's own folder."""
    monkeypatch.chdir(tmp_path)


def _argv(argv: list[str], files: Path, out: Path) -> list[str]:
    return [str(out) if a == "@out" else re.sub(r"@(\S+)", lambda m: str(files / m.group(1)), a) for a in argv]


def names(line: str, flag: str) -> bool:
    """``line`` names one of the ``|``-separated parameters, as a whole word (``--b`` is not ``--bias``)."""
    return any(re.search(re.escape(f) + r"(?![\w-])", line) for f in flag.split("|"))


def assert_one_clean_line(code: int, err: str, flag: str, contains=(), absent=()) -> str:
    assert "Traceback" not in err, err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("error "), line
    assert names(line, flag), (flag, line)
    assert len(line) > len("error ") + len(flag) + 10, line  # says what is allowed, not just the name
    for text in contains:
        assert text in line, (text, line)
    for text in absent:
        assert text not in line, (text, line)
    return line


def follow_up(argv: list[str], out: Path, capsys) -> None:
    """The tiny correct command of the same kind, with the same --out, succeeds and leaves a finished folder."""
    good = [argv[0], *TINY[argv[0]], "--out", str(out)]
    code = main(good)
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    assert out.is_dir() and not out.with_name(out.name + ".partial").exists()


@pytest.mark.parametrize(("argv", "flag", "follow", "contains", "absent"), CASES)
def test_bad_input_exits_2_with_one_line_naming_the_flag(argv, flag, follow, contains, absent, files, tmp_path,
                                                         capsys):
    out = tmp_path / "run"
    code = main(_argv(argv, files, out))
    assert_one_clean_line(code, capsys.readouterr().err, flag, contains, absent)
    if follow:
        follow_up(argv, out, capsys)


def test_the_battery_is_large_and_covers_every_command():
    assert len(CASES) >= 80
    assert {c.values[0][0] for c in CASES} == set(TINY)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file(files, tmp_path, capsys):
    path = tmp_path / "locked.npz"
    np.savez(path, M=np.ones((1, 2, 3)), Y=np.ones((1, 2)))
    path.chmod(0)
    code = main(["train", *TINY["train"], "--problem-file", str(path), "--out", str(tmp_path / "run")])
    assert_one_clean_line(code, capsys.readouterr().err, "--problem-file", ("permission denied",))
    follow_up(["train"], tmp_path / "run", capsys)


# -- the library behind the file cases -----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "words"), [
    ("strings.pt", "M holds a str"), ("objects.pt", "not an array of numbers"), ("string.pt", "dict of named arrays"),
    ("huge.npz", "overflows float64"), ("complex.npz", "M must be real"), ("b_gt_d.npz", "the file's M has b = 20"),
    ("random.npz", "not a readable .npz file"), ("objects.npz", "Python objects"), ("empty.npz", "at least one"),
])
def test_problem_files_raise_one_line_value_errors_in_library_terms(name, words, files):
    with pytest.raises(ValueError) as info:
        problems.load(files / name)
    text = str(info.value)
    assert words in text and "\n" not in text and "--" not in text, text


@pytest.mark.parametrize(("name", "words"), [("w_extra.pt", "has W4, which the model does not have"),
                                             ("w_bias.pt", "has b1, b2, b3"), ("w_complex.pt", "W1 must be real")])
def test_init_files_refuse_what_would_be_lost(name, words, files):
    with pytest.raises(ValueError, match=re.escape(words)) as info:
        inits.load(files / name, (2, 8), bias=False)
    assert "--" not in str(info.value)


def test_a_dtype_that_overflows_the_problem_names_dtype():
    from ntkcheck.config import ConfigError

    p = problems.generate(2, 6, 4, seed=0)
    big = problems.from_tensors(p.M * 1e25, p.Y)  # fine in float64: β ≈ 1e50
    with pytest.raises(ConfigError) as info:
        big.to(dtype=torch.float32)
    assert info.value.field == "dtype" and "float32" in info.value.message
    assert big.to(dtype=torch.float64).M.dtype == torch.float64 and p.to(dtype=torch.float32).M.dtype == torch.float32


# -- folders ------------------------------------------------------------------------------------------------


def test_an_existing_empty_out_folder_is_where_the_run_goes(tmp_path, capsys):
    """Decided for issue 12: an empty folder given as --out (``mkdir runs/x`` first) is accepted and holds the run."""
    out = tmp_path / "empty"
    out.mkdir()
    assert main(["train", *TINY["train"], "--out", str(out)]) == 0, capsys.readouterr().err
    assert (out / "report.json").is_file()


@pytest.mark.parametrize("command", ["train", "verify"])  # (ntk writes into a folder by design, --run's too)
def test_a_finished_run_is_never_overwritten(command, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([command, *TINY[command], "--out", str(out)]) == 0
    capsys.readouterr()
    before = sorted(p.name for p in out.iterdir())
    code = main([command, *TINY[command], "--out", str(out)])
    assert_one_clean_line(code, capsys.readouterr().err, "--out")
    assert sorted(p.name for p in out.iterdir()) == before


def test_bounds_at_an_enormous_e_answers_without_a_traceback(capsys):
    """e = 1e300 is a finite positive number: the table (exit 0), or one line naming --e (exit 2), never a crash."""
    code = main(["bounds", *TINY["bounds"], "--e", "1e300"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code == 0 or (code == 2 and names(err.strip().splitlines()[-1], "--e")), err


# -- through the installed entry point -----------------------------------------------------------------------


THROUGH_PYTHON = [
    (["train", "--width", "abc"], "--width"),
    (["train", "--problem-file", "@random.npz"], "--problem-file"),
    (["train", "--init-file", "@w_extra.pt"], "--init-file"),
    (["verify", "--fit-early", "1"], "--fit-early"),
    (["ntk", "--run", "@busy"], "--run"),
    (["reproduce", "fig99"], "FIGURE"),
    (["bounds", "--C", "nan"], "--C"),
]


def test_no_traceback_reaches_the_terminal(files, tmp_path):
    """The same errors through ``python -m ntkcheck.cli``, in parallel: stderr holds one line and no traceback."""
    running = []
    for i, (args, flag) in enumerate(THROUGH_PYTHON):
        command = args[0]
        argv = [command, *args[1:]] if command == "reproduce" else [command, *TINY[command], *args[1:]]
        if command in WITH_OUT:
            argv += ["--out", str(tmp_path / f"run{i}")]
        argv = _argv(argv, files, tmp_path)
        running.append((flag, subprocess.Popen([sys.executable, "-m", "ntkcheck.cli", *argv], stdout=subprocess.PIPE,
                                               stderr=subprocess.PIPE, text=True)))
    for flag, proc in running:
        _, err = proc.communicate(timeout=300)
        assert_one_clean_line(proc.returncode, err, flag)


# -- sizes that do not fit: one capped child ----------------------------------------------------------------
# (the small preset's other sizes: ``--L 1000000`` at tiny sizes fits in memory and is only slow, see the report)


HUGE = [
    pytest.param(["train", "--width", "1000000000"], "--width", id="train --width 1e9"),
    pytest.param(["train", "--width", "10000000", "--wide-layer", "dense"], "--width", id="train --width 1e7 dense"),
    pytest.param(["train", "--N", "100000000"], "--N", id="train --N 1e8"),
    pytest.param(["train", "--d", "100000", "--b", "100000"], "--d|--b", id="train --d 1e5 --b 1e5"),
    pytest.param(["train", "--width", "99999999999999999999999"], "--width", id="train --width 1e23"),
    pytest.param(["train", "--T", "10000000"], "--T", id="train --T 1e7"),
    pytest.param(["train", "--L", "1000000"], "--L", id="train --L 1e6"),
    pytest.param(["train", "--iters", "1000000000000000000000000000000"], "--iters", id="train --iters 1e30"),
    pytest.param(["verify", "--N", "100", "--d", "1000", "--b", "1000", "--ntk-method", "dense"], "--N|--b",
                 id="verify --N 100 --d 1000 --b 1000 dense"),
    pytest.param(["verify", "--width", "10000000"], "--width", id="verify --width 1e7"),
    pytest.param(["ntk", "--N", "100", "--d", "1000", "--b", "1000"], "--N|--b", id="ntk --N 100 --d 1000 --b 1000"),
    pytest.param(["ntk", "--width", "1000000000"], "--width", id="ntk --width 1e9"),
    pytest.param(["bounds", "--N", "100000000"], "--N", id="bounds --N 1e8"),
]

HUGE_CHILD = textwrap.dedent("""
    import io, json, os, signal, sys, contextlib
    import torch
    torch.set_num_threads(1)
    import scipy.linalg, threadpoolctl  # noqa: F401 - imported by every command (thread limits): not the case's time
    import ntkcheck.apps.train, ntkcheck.apps.verify_start  # noqa: F401
    from ntkcheck.cli import main

    class Slow(Exception):
        pass

    def alarm(signum, frame):
        raise Slow()

    signal.signal(signal.SIGALRM, alarm)
    cases, tiny, limit = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
    results = []
    for argv, out in cases:
        err = io.StringIO()
        result = {}
        signal.alarm(limit)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                result["code"] = main(argv)
        except Slow:
            result["raised"] = f"still running after {limit} s"
        except BaseException as exc:  # what would reach the terminal as a traceback
            result["raised"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        finally:
            signal.alarm(0)
        result["err"] = err.getvalue()
        if out is not None:
            try:
                with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                    result["follow"] = main([argv[0], *tiny[argv[0]], "--out", out])
            except BaseException as exc:
                result["follow"] = f"{type(exc).__name__}: {exc}"
        results.append(result)
    print(json.dumps(results))
""")


@pytest.fixture(scope="module")
def huge_results(tmp_path_factory) -> dict:
    """Run every HUGE case once, in one child capped at CAP bytes of address space."""
    root = tmp_path_factory.mktemp("huge")
    cases = []
    for i, param in enumerate(HUGE):
        args = param.values[0]  # the defaults (the small preset) with the sizes of the case, 2 iterations
        out = str(root / f"run{i}") if args[0] in WITH_OUT else None
        iters = ["--iters", "2"] if args[0] in ("train", "verify") else []
        cases.append(([args[0], *iters, *args[1:], *(["--out", out] if out else [])], out))

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (CAP, CAP))

    done = subprocess.run([sys.executable, "-c", HUGE_CHILD, json.dumps(cases), json.dumps(TINY), str(HUGE_SECONDS)],
                          capture_output=True, text=True, timeout=60 + HUGE_SECONDS * len(HUGE) * 2, preexec_fn=cap)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return {param.id: result for param, result in zip(HUGE, results)}


@pytest.mark.parametrize(("args", "flag"), HUGE)
def test_sizes_that_do_not_fit_are_refused_before_allocating(args, flag, huge_results, request):
    result = huge_results[request.node.callspec.id]
    assert "raised" not in result, result
    line = assert_one_clean_line(result["code"], result["err"], flag)
    assert "memory" in line or "2^62" in line, line
    if args[0] in WITH_OUT:
        assert result["follow"] == 0, result


# -- the library: the same refusals, in Python's spelling (issue 22) ---------------------------------------------


def test_memory_advice_in_python_is_python_and_following_it_reaches_the_allocation():
    import math

    from ntkcheck.config import TrainConfig
    from ntkcheck.resources import MemoryLimitError, check

    cfg = TrainConfig(N=2, d=6, b=4, width=8, T=3, iters=2)
    with pytest.raises(MemoryLimitError) as info:
        check(cfg, limit=1000)
    assert "max_memory=inf (math.inf)" in info.value.message and "--" not in str(info.value)
    assert "`max_memory` inf" in info.value.flagged and f"lower `{info.value.field}`" in info.value.flagged
    assert check(cfg, limit=math.inf).total_bytes > 1000  # the advice, followed


@pytest.mark.parametrize("threads", [0, -1, True, 2.5, "2", 5000])
@pytest.mark.parametrize("call", ["train", "verify", "sweep"])
def test_threads_in_python_must_be_a_positive_integer(call, threads):
    import ntkcheck
    from ntkcheck.config import ConfigError

    cfg = ntkcheck.preset("small", N=2, d=6, b=4, width=8, T=3, e=3.0, iters=1)
    run = {"train": lambda: ntkcheck.train(cfg, threads=threads),
           "verify": lambda: ntkcheck.verify(cfg, threads=threads, figures=False),
           "sweep": lambda: ntkcheck.sweep(ntkcheck.make_spec("small", base=cfg.to_dict(), probe_method="none"),
                                           threads=threads)}[call]
    before = torch.get_num_threads()
    with pytest.raises(ConfigError) as info:
        run()
    assert info.value.field == "threads" and torch.get_num_threads() == before


@pytest.mark.parametrize("name", ["bogus", "iter", "grids", "threads"])
def test_make_spec_names_an_unknown_keyword(name):
    from ntkcheck.apps.sweep import make_spec
    from ntkcheck.config import ConfigError

    with pytest.raises(ConfigError) as info:
        make_spec("small", **{name: 1})
    assert info.value.field == name and "sweep setting" in info.value.message


def test_make_spec_takes_config_fields_as_preset_does():
    from ntkcheck.apps.sweep import make_spec
    from ntkcheck.config import preset

    assert make_spec("small", iters=100).base == preset("small", iters=100)
    assert make_spec("paper", iters=7, batch_size=3).base == preset("paper", iters=7)


def test_bounds_preset_gives_the_presets_thresholds(capsys):
    import json as json_

    assert main(["bounds", "--preset", "paper", "--no-data", "--json"]) == 0
    paper = json_.loads(capsys.readouterr().out)
    assert main(["bounds", "--preset", "paper", "--width", "64", "--no-data", "--json"]) == 0
    narrow = json_.loads(capsys.readouterr().out)
    assert main(["bounds", "--no-data", "--json"]) == 0
    small = json_.loads(capsys.readouterr().out)
    assert paper != small and narrow != paper
