#!/usr/bin/env bash
# GPU step 1 (issue 26): the kernels, no DALI needed. Run on the lent machine from the repository root:
#   bash benchmarks/gpu/kernels.sh        (writes everything under $OUT; about 5 minutes on an H100)
# What it records: the device (torch's name, driver, CUDA, torch, numba-cuda), the GPU tier that needs no DALI
# (kernels bit-identical as bits, stream and device rules, the lifetime rules with real streams), the emulated
# tier (a sanity check on that machine), the kernel, owned-copy and loss benchmarks (CUDA groups, baselines in
# the same run), the static cost model beside them, and the first-launch latency with and without precompile.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, numba, numba.cuda as c; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
torch.cuda.get_device_name(0), 'numba', numba.__version__)"
} > "$OUT/device.txt" 2>&1
timeout 240 python3 -m pytest -q -m gpu tests/test_gpu.py tests/test_gpu_rules.py > "$OUT/gpu-kernel-tests.log" 2>&1
timeout 120 python3 -m pytest -q tests/test_emulated_gpu.py -x > "$OUT/emulated-tier.log" 2>&1
timeout 300 python3 -m pytest -q benchmarks/test_bench_kernels.py benchmarks/test_bench_owned_copy.py \
  benchmarks/test_bench_losses.py -k "cuda or gpu" --benchmark-enable --conditions "lent GPU, nothing else running" \
  --ratios-md "$OUT/kernels-gpu.md" > "$OUT/kernels-gpu.log" 2>&1
python3 -m benchmarks.cost_model --markdown "$OUT/cost-model-sm90.md" > "$OUT/cost-model.log" 2>&1
python3 benchmarks/gpu/first_launch.py > "$OUT/first-launch.txt" 2>&1
tail -n 3 "$OUT"/*.log
