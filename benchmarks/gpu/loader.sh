#!/usr/bin/env bash
# GPU step 2 (issue 26): the loader, after DALI's wheels were carried in parts (see ../shared/gpu/README.md: run
# bash ../shared/gpu/prepare.sh here first, then one device run per part carrying .gpu/pK, back to back).
#   bash benchmarks/gpu/loader.sh        (writes everything under $OUT)
# The DALI GPU tests (the loader with mixed decode, the lifetime stress with poisoned buffers and one-ahead
# loops, graph placement, dali.mix on GPU batches), then the end-to-end benchmark in steady state: fused vs plain
# DALI vs DALI's ops vs DALI + timm vs DataLoader + timm, the graph placement, and the crop sizes.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
bash .gpu/p1/install.sh > "$OUT/dali-install.log" 2>&1 || { cat "$OUT/dali-install.log"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD
python3 -m pip install -q --no-deps --no-build-isolation -e . >> "$OUT/dali-install.log" 2>&1
python3 -c "import nvidia.dali as d; print('DALI', d.__version__)" >> "$OUT/device.txt" 2>&1
timeout 300 python3 -m pytest -q -m gpu > "$OUT/gpu-tests.log" 2>&1
for dtype in float16 float32; do
  timeout 240 python3 -m dali_mixup bench --device gpu --batch-size 256 --threads 8 --dtype "$dtype" --repeats 3 \
    --img-sizes 160 192 224 --conditions "lent GPU, nothing else running" \
    --json "$OUT/bench-gpu-$dtype.json" > "$OUT/bench-gpu-$dtype.log" 2>&1
done
tail -n 5 "$OUT"/*.log
