"""CI must run the test command that README.md gives a new user."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    test_command = next(c for c in commands if "pytest" in c)
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command.strip() in ci_lines


TINY = dict(N=2, d=6, b=4, width=16, T=3, ntk_every=0)


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)


def test_every_python_block_of_the_readme_runs(tmp_path, monkeypatch):
    """The README's Python blocks, in order, in one namespace, at a tiny size: ``ntkcheck.preset`` is shrunk to
    N=2 instances of 4×6, width 16, T=3 and at most 3 iterations; the objects the first block takes as given (a
    network, its problem, a measured loss curve) are made at that size. Files go to a temporary folder."""
    import numpy as np

    import ntkcheck

    real = ntkcheck.preset

    def tiny(name, **overrides):
        overrides = {**overrides, **TINY, "iters": min(overrides.get("iters", 3), 3)}
        return real(name, **{k: v for k, v in overrides.items() if k != "ntk_every"})

    monkeypatch.setattr(ntkcheck, "preset", tiny)
    monkeypatch.chdir(tmp_path)
    cfg = tiny("small")
    namespace = {"problem": ntkcheck.make_problem(cfg), "net": ntkcheck.build_model(cfg),
                 "measured_loss": np.geomspace(1.0, 1e-3, 40)}
    blocks = python_blocks()
    assert len(blocks) >= 3
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
