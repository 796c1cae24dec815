#!/usr/bin/env bash
# The GPU check, one command (under 8 minutes on one GPU): the compute core on torch's meta device (no tensor made on
# the CPU by mistake; every objective and backbone), the CUDA tests (CUDA against CPU in float64: X_T, gradients, K,
# the angular layer, a batched sweep, training on LASSO/logistic/NAG/prox/FISTA, the LSTM and a random init,
# linearised training; no host synchronisation inside the unrolled loop), two tiny `ntkcheck verify --device cuda`
# end to end (the paper's setting and LASSO with FISTA: training, probes, report; into a temporary folder, removed
# at exit), then the time of one paper-scale training
# iteration and of the paper-scale K on the GPU. Results go to stdout and, when $OUT is set, to $OUT/gpu_check.json.
#
#     bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0), torch.__version__)"
python -m pytest -q -n 0 tests/test_meta_device.py
python -m pytest -q -n 0 -m cuda tests/test_cuda.py tests/test_train.py -k "cuda or gpu or cpu"
verify_dir=$(mktemp -d)
trap 'rm -rf "$verify_dir"' EXIT
python -m ntkcheck.cli verify --device cuda --width 64 --T 5 --N 4 --d 8 --b 6 --iters 20 --ntk-every 10 --no-figures \
    --out "$verify_dir/verify" | tail -n 5
python -m ntkcheck.cli verify --device cuda --problem lasso --update fista --width 64 --T 5 --N 4 --d 8 --b 6 --iters 20 \
    --optimizer adam --lr 1e-3 --ntk-every 10 --no-figures --out "$verify_dir/verify-lasso" | tail -n 5
python - <<'PY'
import json, os, time
import torch
from ntkcheck import empirical_ntk, preset
from ntkcheck.build.experiment import setup
from ntkcheck.engine import training
from ntkcheck.problems.meta import meta_optimizer, reference_objective

def timed(fn, repeats):
    fn(); torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats

out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
for dtype in ("float64", "float32"):
    x = setup(preset("paper", device="cuda", dtype=dtype))
    cfg = x.config
    optimizer = meta_optimizer(cfg.optimizer, x.model.parameters(), cfg.lr)
    F_gd = reference_objective(x.problem, cfg.T, cfg.step_scale, cfg.update)
    W0 = {k: v.detach().cpu() for k, v in x.model.state_dict().items()}
    cell = training.cell_state(cfg.replace(iters=10**9), x.model, optimizer, W0)  # the one trainer's single cell
    out[f"train_iteration_s_{dtype}"] = timed(lambda: training.run_iteration(cfg, x.model, cell, x.problem, F_gd, 0), 5)
x = setup(preset("paper", device="cuda"))
out["paper_K_s_float64"] = timed(lambda: empirical_ntk(x.model, x.problem, x.config.T), 1)
print(json.dumps(out, indent=2))
if os.environ.get("OUT"):
    with open(os.path.join(os.environ["OUT"], "gpu_check.json"), "w") as f:
        json.dump(out, f, indent=2)
PY
