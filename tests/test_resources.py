"""Memory estimates (ntkcheck/resources.py): an upper bound within about 2× of the measured peak, monotone in the
sizes, sizes beyond what numpy/torch can index refused, and errors that name the field driving the size."""

import json
import math
import os
import resource
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ntkcheck import resources
from ntkcheck.config import ConfigError, ProbeConfig, TrainConfig
from ntkcheck.resources import MemoryLimitError, check, estimate

CAP = 4 * 2**30  # address space of the measuring children: a wrong estimate fails instead of swapping
TINY = dict(N=2, d=6, b=4, width=8, T=3, e=3.0, iters=1)


def _capped():
    resource.setrlimit(resource.RLIMIT_AS, (CAP, CAP))


CHILD = textwrap.dedent("""
    import gc, json, sys
    import torch
    torch.set_num_threads(1)
    from ntkcheck.config import ProbeConfig, TrainConfig
    from ntkcheck.engine.training import train
    from ntkcheck.apps.verify import verify

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

    spec = json.loads(sys.argv[1])
    cfg = TrainConfig(**spec["config"])
    probes = None if spec["probes"] is None else ProbeConfig(**spec["probes"])
    tiny = TrainConfig(**spec["tiny"])
    train(tiny) if probes is None else verify(tiny, ProbeConfig(ntk_every=0), figures=False)  # lazy imports, buffers
    gc.collect()
    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    train(cfg) if probes is None else verify(cfg, probes, figures=False)
    print(json.dumps({"added": status("VmHWM") - before}))
""")


def measured_peak(config: dict, probes: dict | None) -> int:
    """Peak RSS that a run in memory adds, in a fresh, capped child."""
    spec = json.dumps({"config": config, "probes": probes, "tiny": TINY})
    done = subprocess.run([sys.executable, "-c", CHILD, spec], capture_output=True, text=True, timeout=300,
                          preexec_fn=_capped)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["added"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status and clear_refs")
@pytest.mark.parametrize(
    ("config", "probes"),
    [
        # training on the dense wide layer: the R×n features of every step (84 MB blocks, float64)
        (dict(N=10, d=512, b=400, width=2048, T=3, wide_layer="dense", iters=1), None),
        # verify at the small configuration: the structured Jacobian and the dense kernel at Q = 800
        (dict(iters=1), dict(ntk_every=0)),
    ],
    ids=["train-dense", "verify-small"],
)
def test_the_estimate_bounds_the_measured_peak_within_about_2x(config, probes):
    measured = measured_peak(config, probes)
    est = estimate(TrainConfig(**config), None if probes is None else ProbeConfig(**probes))
    assert measured <= est.total_bytes <= 2.2 * measured, (measured, est)


# -- shape of the estimate ----------------------------------------------------------------------------------


@pytest.mark.parametrize("wide_layer", ["angular", "dense"])
@pytest.mark.parametrize("probes", [None, ProbeConfig(ntk_method="dense"), ProbeConfig(ntk_method="lanczos")],
                         ids=["train", "dense", "lanczos"])
@pytest.mark.parametrize("field", ["width", "N", "d", "T", "L", "iters"])
def test_the_estimate_grows_with_every_size(field, probes, wide_layer):
    """(``ntk_method="auto"`` switches from the dense kernel to Lanczos above N·b = 4000, and the estimate with it.)"""
    base = TrainConfig(wide_layer=wide_layer)
    sizes = [getattr(base, field) * k for k in (1, 2, 4, 16)]
    totals = [estimate(base.replace(**{field: v}), probes).total_bytes for v in sizes]
    assert all(a < b for a, b in zip(totals, totals[1:])), (field, totals)


def test_the_parts_add_up_and_probes_cost_nothing_without_probes():
    cfg = TrainConfig()
    plain, probed = estimate(cfg), estimate(cfg, ProbeConfig())
    assert plain.probe_bytes == 0 and plain.total_bytes == plain.training_bytes
    assert probed.training_bytes == plain.training_bytes and probed.probe_bytes > 0
    assert max(probed.training_bytes, probed.probe_bytes) <= probed.total_bytes
    assert probed.total_bytes <= probed.training_bytes + probed.probe_bytes
    assert [t.bytes for t in probed.terms] == sorted((t.bytes for t in probed.terms), reverse=True)


def test_the_dense_wide_layer_costs_about_T_feature_matrices():
    """ARCHITECTURE.md: the dense form keeps an N·d×n matrix per step, 4·N·d·n·T bytes in float32."""
    cfg = TrainConfig(N=10, d=512, b=400, width=5120, T=100, dtype="float32")
    dense, angular = estimate(cfg.replace(wide_layer="dense")), estimate(cfg.replace(wide_layer="angular"))
    features = 4 * 10 * 512 * 5120 * 100
    assert features <= dense.training_bytes <= 2 * features
    assert angular.training_bytes < features / 20
    assert dense.driver in ("width", "T", "N", "d")


def test_the_estimate_is_instant_and_allocates_nothing_at_absurd_sizes():
    est = estimate(TrainConfig(N=10**8, width=10**9, T=10**7))
    assert est.total_bytes > 10**15


def test_a_problem_file_sets_the_shape_from_its_header(tmp_path):
    M = np.zeros((3, 5, 7))
    np.savez(tmp_path / "qp.npz", M=M, Y=np.zeros((3, 5)))
    cfg = TrainConfig(problem_file=str(tmp_path / "qp.npz"))
    assert resources.problem_shape(cfg) == (3, 5, 7)
    import torch

    torch.save({"M": torch.zeros(2, 4, 6), "Y": torch.zeros(2, 4)}, tmp_path / "qp.pt")
    assert resources.problem_shape(cfg.replace(problem_file=str(tmp_path / "qp.pt"))) == (2, 4, 6)
    # an unreadable file falls back to the config's sizes (the loader reports it)
    assert resources.problem_shape(cfg.replace(problem_file=str(tmp_path / "none.npz"))) == (cfg.N, cfg.b, cfg.d)


# -- sizes that cannot be indexed at all --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "probes", "field"),
    [
        (dict(width=99999999999999999999999), None, "width"),
        (dict(width=10**400), None, "width"),
        (dict(width=2**62), None, "width"),
        (dict(N=2**40, d=2**30, b=1), None, "N"),
        (dict(d=2**31, b=2**31), None, ("d", "b")),
        (dict(T=2**62), None, "T"),
        (dict(L=2**63), None, "L"),
        (dict(iters=2**63), None, "iters"),
        (dict(N=2**20, d=2**20, b=2**20, width=1), ProbeConfig(ntk_method="dense"), "b"),
    ],
)
def test_sizes_beyond_2_to_the_62_are_refused_before_any_arithmetic(changes, probes, field):
    cfg = TrainConfig(**changes)
    for call in (lambda: estimate(cfg, probes), lambda: check(cfg, probes, limit=math.inf)):
        with pytest.raises(ConfigError) as info:
            call()
        assert info.value.field in (field if isinstance(field, tuple) else (field,)), str(info.value)
        assert "2^62" in info.value.message and "--" not in str(info.value)


# -- the check ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "probes", "field", "hint"),
    [
        (dict(width=10**9), None, "width", None),
        (dict(N=10**8), None, "N", None),
        (dict(d=100_000, b=100_000), None, ("d", "b"), None),
        (dict(T=10**7), None, "T", None),
        (dict(L=10**6), None, "L", None),
        (dict(width=10**6, wide_layer="dense"), None, "width", "wide_layer=angular"),
        (dict(N=100, d=1000, b=1000), ProbeConfig(ntk_method="dense"), ("N", "b"), "ntk_method=lanczos"),
        (dict(width=10**7), ProbeConfig(), "width", None),  # α's R×n features, although training is angular
        (dict(iters=10**6), ProbeConfig(ntk_method="lanczos"), "iters", None),  # Theil–Sen's pairwise slopes
    ],
)
def test_too_much_memory_names_the_field_that_drives_it(changes, probes, field, hint):
    with pytest.raises(MemoryLimitError) as info:
        check(TrainConfig(**changes), probes, limit=16e9)
    err = info.value
    assert isinstance(err, ConfigError)
    assert err.field in (field if isinstance(field, tuple) else (field,)), str(err)
    assert err.message.startswith("needs about ") and "limit 16 GB: max_memory" in err.message
    assert f"lower {err.field}" in err.message and "max_memory=inf" in err.message
    assert "--" not in str(err)
    if hint:
        assert hint in err.message
    assert err.estimate.total_bytes > err.limit == 16e9


def test_a_big_problem_file_is_named_as_the_driver(tmp_path):
    import zipfile

    # a .npz whose header says (10**6, 400, 512): the data need not exist for the estimate
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1, 1)))
    header["shape"] = (10**6, 400, 512)
    with zipfile.ZipFile(tmp_path / "big.npz", "w") as z, z.open("M.npy", "w") as f:
        np.lib.format.write_array_header_1_0(f, header)
    with pytest.raises(MemoryLimitError) as info:
        check(TrainConfig(problem_file=str(tmp_path / "big.npz")), limit=16e9)
    assert info.value.field == "problem_file" and "use a smaller problem" in info.value.message


def test_the_default_limit_is_the_available_memory_and_inf_disables_it():
    assert check(TrainConfig()).total_bytes < resources.available_memory()
    huge = TrainConfig(width=10**9)
    with pytest.raises(MemoryLimitError, match="the available memory"):
        check(huge)
    assert check(huge, limit=math.inf).total_bytes > 10**11


@pytest.mark.parametrize("limit", [0, -1.0, float("nan"), True, "8GB"])
def test_a_limit_that_is_not_a_positive_number_names_max_memory(limit):
    with pytest.raises(ConfigError) as info:
        check(TrainConfig(), limit=limit)
    assert info.value.field == "max_memory" and "--" not in str(info.value)


def test_available_memory_respects_the_address_space_limit():
    code = "from ntkcheck.resources import available_memory; print(available_memory())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          preexec_fn=_capped)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 0 < int(done.stdout) < CAP


def test_set_threads_limits_torch_and_every_blas_pool():
    """--threads reaches torch and the BLAS pools of numpy and scipy (scipy's BLAS runs the symmetric Gram products,
    numpy's LAPACK the eigendecompositions), not torch alone; checked in a child, so the suite keeps its own limits."""
    code = textwrap.dedent("""
        import json
        from threadpoolctl import threadpool_info
        import torch
        from ntkcheck.resources import set_threads
        set_threads(1)
        print(json.dumps([torch.get_num_threads()] + [p["num_threads"] for p in threadpool_info()]
                         + [sorted({p["internal_api"] for p in threadpool_info()})]))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr
    *counts, apis = json.loads(done.stdout.strip().splitlines()[-1])
    assert "openblas" in apis or "mkl" in apis
    assert counts == [1] * len(counts) and len(counts) >= 3  # torch, and at least numpy's and scipy's BLAS


@pytest.mark.parametrize("load,expected", [(0.0, 4), (0.4, 4), (1.6, 2), (3.6, 1), (9.0, 1)])
def test_the_default_threads_are_the_cores_not_busy(monkeypatch, load, expected):
    monkeypatch.setattr(resources.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(resources.os, "getloadavg", lambda: (load, 0.0, 0.0))
    assert resources.idle_cores() == expected


def test_without_a_load_average_every_core_is_taken(monkeypatch):
    def unavailable():
        raise OSError("no load average")

    monkeypatch.setattr(resources.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr(resources.os, "getloadavg", unavailable)
    assert resources.idle_cores() == 3


def test_the_command_line_sets_the_idle_cores_unless_threads_is_given(monkeypatch, tmp_path):
    import ntkcheck.cli as cli

    calls = []
    monkeypatch.setattr(cli, "set_threads", calls.append)
    monkeypatch.setattr(cli, "idle_cores", lambda: 7)
    tiny = ["train", "--N", "2", "--d", "6", "--b", "4", "--width", "8", "--T", "3", "--iters", "1"]
    assert cli.main([*tiny, "--out", str(tmp_path / "a")]) == 0
    assert cli.main([*tiny, "--threads", "1", "--out", str(tmp_path / "b")]) == 0
    assert calls == [7, 1]
