"""Shared test settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tests use tiny tensors: more threads only add OpenMP barriers, which cost 10–100× on a shared,
    busy CPU (measured here). Subprocesses started by the CLI tests keep torch's own default."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def one_thread_on_the_command_line(monkeypatch):
    """In-process CLI calls without --threads take the idle cores (ntkcheck.resources.idle_cores): here, one, so
    that no test leaves this process with more threads than the session's one."""
    import ntkcheck.cli

    monkeypatch.setattr(ntkcheck.cli, "idle_cores", lambda: 1)
