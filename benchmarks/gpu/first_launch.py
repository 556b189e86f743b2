"""First-launch latency of the fused kernels on a GPU, each case in a fresh process: the first ``mix_batch`` with
nothing compiled (numba's on-disk cache empty, then warm), and after ``precompile`` (what a loader starts in the
background when it is built). Prints one line per case, seconds."""

import os
import subprocess
import sys
import tempfile

CASE = r"""
import time, torch, dali_mixup as dm
from dali_mixup import mixing
precompile = {precompile}
images = torch.zeros((64, 224, 224, 3), dtype=torch.uint8, device="cuda")
labels = torch.zeros(64, dtype=torch.int64, device="cuda")
cfg = dm.MixupConfig(1000, mixup_alpha=0.8, cutmix_alpha=1.0)
if precompile:
    mixing.precompile_in_background(torch.float16, "NCHW", 224, torch.cuda.current_device()).join()
torch.cuda.synchronize()
t = time.perf_counter()
dm.mix_batch(images, labels, cfg, out_dtype=torch.float16, check_labels=False)
torch.cuda.synchronize()
print(f"{{time.perf_counter() - t:.3f}}")
"""


def main():
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label, precompile in (("cold cache, no precompile", False), ("warm cache, no precompile", False),
                                  ("warm cache, after precompile", True)):
            out = subprocess.run([sys.executable, "-c", CASE.format(precompile=precompile)], env=env,
                                 capture_output=True, text=True)
            print(f"{label}: first mix_batch {out.stdout.strip() or out.stderr.strip()[-300:]} s")


if __name__ == "__main__":
    main()
