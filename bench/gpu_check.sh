#!/usr/bin/env bash
# The GPU verification, as one command for a machine with a CUDA device
# (the `device` tool's run, or any GPU box):  bash bench/gpu_check.sh [OUTDIR]
# CuPy, Numba, h5py, click and PyTorch are expected there; missing pure-Python test
# packages can travel as wheels (see the device tool's README) and are put on PYTHONPATH first.
set -uo pipefail
out="${1:-${OUT:-gpu-check}}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 RETINA_NO_PROGRESS=1 RETINA_TEST_SOURCE=1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import cupy; print('cupy', cupy.__version__, cupy.cuda.runtime.getDeviceProperties(0)['name'])"
  python3 -m pytest -q -p no:cacheprovider -m gpu tests          # GPU kernels vs CPU, poisoned outputs
  python3 -m pytest -q -p no:cacheprovider -x tests              # the whole suite with the GPU present
  python3 -m retina.cli bench --backend gpu                       # forward-movie, ig-hidden, osr-sweep, ...
  python3 -m retina.cli bench --backend cpu --workload forward-movie --workload ig-hidden --workload osr-sweep
  python3 bench/torch_compare.py --device cuda --backend gpu      # PyTorch/cuDNN, same computation
} 2>&1 | tee "$out/gpu_check.log"
