#!/usr/bin/env bash
# The GPU check, one command (under 8 minutes on one GPU): the compute core on torch's meta device (no tensor made on
# the CPU by mistake), the CUDA tests (CUDA against CPU in float64: X_T, gradients, K, the angular layer, a batched
# sweep; no host synchronisation inside the unrolled loop), one tiny `ntkcheck verify --device cuda` end to end
# (training, probes, report; into a temporary folder, removed at exit), then the time of one paper-scale training
# iteration and of the paper-scale K on the GPU. Results go to stdout and, when $OUT is set, to $OUT/gpu_check.json.
#
#     bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0), torch.__version__)"
python -m pytest -q tests/test_meta_device.py
python -m pytest -q -m cuda tests/test_cuda.py tests/test_train.py -k "cuda or gpu or cpu"
verify_dir=$(mktemp -d)
trap 'rm -rf "$verify_dir"' EXIT
python -m ntkcheck.cli verify --device cuda --width 64 --T 5 --N 4 --d 8 --b 6 --iters 20 --ntk-every 10 --no-figures \
    --out "$verify_dir/verify" | tail -n 5
python - <<'PY'
import json, os, time
import torch
from ntkcheck import empirical_ntk, preset
from ntkcheck.build.experiment import setup
from ntkcheck.engine.training import meta_optimizer, run_iteration, gd_objective

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
    opt = meta_optimizer("sgd", x.model.parameters(), x.config.lr)
    F_gd = gd_objective(x.problem, x.config.T, x.config.step_scale)
    W0 = {k: v.detach().cpu() for k, v in x.model.state_dict().items()}
    out[f"train_iteration_s_{dtype}"] = timed(lambda: run_iteration(x.config, x.model, opt, x.problem, F_gd, W0,
                                                                     update=True), 5)
x = setup(preset("paper", device="cuda"))
out["paper_K_s_float64"] = timed(lambda: empirical_ntk(x.model, x.problem, x.config.T), 1)
print(json.dumps(out, indent=2))
if os.environ.get("OUT"):
    with open(os.path.join(os.environ["OUT"], "gpu_check.json"), "w") as f:
        json.dump(out, f, indent=2)
PY
