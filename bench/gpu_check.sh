#!/usr/bin/env bash
# The GPU verification, as one command for a machine with a CUDA device
# (the `device` tool's run, or any GPU box):  bash bench/gpu_check.sh [OUTDIR] [BUDGET_S]
#
# CuPy, Numba, h5py, click and PyTorch are expected there (nothing is installed).  The steps run in
# order of importance, each under its own time cap and all under one budget (default 450 s), so a slow
# or failing step never hides the ones after it: the GPU tests, then the GPU benchmarks, the PyTorch
# (cuDNN) comparison and the main job.  Everything goes to OUTDIR/gpu_check.log; pytest writes a JUnit
# file beside it.  On an H200 (2026-12-04) every step took about 400 s in all, 160 s of it the GPU tests.
set -uo pipefail
out="${1:-${OUT:-gpu-check}}"
budget="${2:-450}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 RETINA_NO_PROGRESS=1 RETINA_TEST_SOURCE=1
log="$out/gpu_check.log"
start=$SECONDS

step() {  # step NAME CAP_S COMMAND...
    local name=$1 cap=$2; shift 2
    local left=$((budget - (SECONDS - start)))
    if (( left < 10 )); then echo "=== $name: SKIPPED (budget spent)"; return; fi
    (( cap > left )) && cap=$left
    echo "=== $name (cap ${cap} s, at $((SECONDS - start)) s)"
    local t0=$SECONDS
    timeout -k 5 "$cap" "$@"
    echo "=== $name: rc $? in $((SECONDS - t0)) s"
}

{
  date -u
  step info 30 bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv;
      nproc; python3 -c "import cupy, numba, numpy, torch; print(\"cupy\", cupy.__version__, \"numba\", numba.__version__,
      \"numpy\", numpy.__version__, \"torch\", torch.__version__, cupy.cuda.runtime.getDeviceProperties(0)[\"name\"])"'
  # GPU kernels against the CPU and float64 references, poisoned outputs, GPU training and simulator
  step gpu-tests 200 python3 -m pytest -q -p no:cacheprovider -m gpu tests -o addopts="" \
      --benchmark-disable --junitxml="$out/gpu_tests.xml" -rfE
  step bench-forward 45 python3 -m retina.cli bench --backend gpu --workload forward-movie
  step bench-ig-hidden 60 python3 -m retina.cli bench --backend gpu --workload ig-hidden
  step bench-ig-hidden-fft 45 python3 -c "import retina.kernels.gpu as g; g.PIG_LAYER2 = 'fft'
from retina.bench import run_workload
print('PIG_LAYER2=fft', run_workload('ig-hidden', backend='gpu'))"
  step torch-compare 60 python3 bench/torch_compare.py --device cuda --backend gpu          # float32 both sides
  step torch-compare-tf32 45 python3 bench/torch_compare.py --device cuda --backend gpu --tf32   # PyTorch's default
  step explain 90 python3 -m retina.cli explain -o "$out/explain" -q          # first call: compiles
  step explain-warm 60 python3 -m retina.cli explain -o "$out/explain" -q     # compiled kernels cached
  step bench-train 60 python3 -m retina.cli bench --backend gpu --workload train-epoch
  step bench-ig-input 45 python3 -m retina.cli bench --backend gpu --workload ig-input
  step bench-osr 45 python3 -m retina.cli bench --backend gpu --workload osr-sweep --scale 0.2
  step bench-insilico 30 python3 -m retina.cli bench --backend gpu --workload insilico-minute
  echo "=== total $((SECONDS - start)) s"
} 2>&1 | tee "$log"
[ -f "$out/explain/summary.txt" ] && cp "$out/explain/summary.txt" "$out/explain_summary.txt"
rm -rf "$out/explain"
exit 0
