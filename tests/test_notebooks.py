"""The exploration notebooks (notebooks/*.py, jupytext percent format) run top to bottom and draw figures.

Each notebook is read with jupytext and executed by nbclient in a fresh kernel, with a temporary working
directory (nothing lands in the repository). The kernel is this test's own interpreter, declared in a
kernelspec written to a temporary JUPYTER_PATH, so the notebooks import the same ntkcheck as the tests
and no kernelspec needs to be installed beforehand (only ipykernel in this environment).
"""

import json
import os
import sys
import time
from pathlib import Path

import jupytext
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
KERNEL = "ntkcheck-notebooks"
CELL_TIMEOUT = 300  # seconds per cell; each notebook takes well under a minute on one thread


def test_the_eight_notebooks_are_there():
    """01–04 explore the theory on the real model; 05–08 load the recorded studies (objectives and momentum share 06)."""
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07", "08"]


@pytest.fixture(scope="module")
def kernel_path(tmp_path_factory):
    """A kernelspec that runs this interpreter with the repository first on the path and one thread."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "ntkcheck (tests)", "language": "python",
        "env": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    }))
    return root


def images(nb) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
               for out in cell.get("outputs", []))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_draws(path, kernel_path, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, (str(kernel_path), os.environ.get("JUPYTER_PATH")))))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = jupytext.read(path)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=KERNEL,
                            resources={"metadata": {"path": str(tmp_path)}})
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails
    seconds = time.perf_counter() - started
    errors = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
              if out.get("output_type") == "error"]
    assert not errors
    assert images(nb) >= 1, f"{path.name} drew no figure"
    print(f"{path.name}: {seconds:.1f} s")
