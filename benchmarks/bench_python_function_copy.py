"""What DALI's batch-mode ``python_function`` costs around the kernel, on the CPU: handing B per-sample arrays in,
taking B per-sample outputs back and copying them into DALI's buffers (its only form: a list of samples).

Two pipelines over the same fixed uint8 batch (external_source): ``light`` returns B one-element samples,
``heavy`` returns per-sample views of a ready (B, 3, S, S) float16 batch and (B, C) float32 targets, what the
fused step returns. heavy − light is the cost of DALI taking the outputs back; both against the fused CPU kernel
(``mix_batch``) on the same batch. Medians of alternating rounds.

    python benchmarks/bench_python_function_copy.py [--batch-size 64] [--image-size 224] [--threads 2]
"""

import argparse
import statistics
import time

import numpy as np
import torch

import dali_mixup as dm


def _pipeline(batch, outputs, threads):
    from nvidia.dali import fn, pipeline_def

    @pipeline_def(batch_size=len(batch), num_threads=threads, device_id=None, prefetch_queue_depth=1)
    def pipe():
        images = fn.external_source(source=lambda: batch, batch=True)
        return tuple(fn.python_function(images, function=lambda _: outputs, batch_processing=True, num_outputs=2))

    p = pipe()
    p.build()
    return p


def _median_ms(run, count=30):
    for _ in range(3):
        run()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    n, s, classes = args.batch_size, args.image_size, 1000
    rng = np.random.default_rng(0)
    batch = [rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for _ in range(n)]
    light = _pipeline(batch, ([np.zeros(1, np.float16)] * n, [np.zeros(1, np.float32)] * n), args.threads)
    heavy = _pipeline(batch, (list(np.zeros((n, 3, s, s), np.float16)), list(np.zeros((n, classes), np.float32))),
                      args.threads)
    images, labels = torch.from_numpy(np.stack(batch)), torch.zeros(n, dtype=torch.int64)
    cfg = dm.MixupConfig(classes, mixup_alpha=1.0)
    runs = {"light": light.run, "heavy": heavy.run,
            "kernel": lambda: dm.mix_batch(images, labels, cfg, out_dtype=torch.float16, check_labels=False)}
    ms = {name: [] for name in runs}
    for rnd in range(args.rounds):
        for name in (list(runs) if rnd % 2 == 0 else list(runs)[::-1]):
            ms[name].append(_median_ms(runs[name]))
    med = {name: statistics.median(v) for name, v in ms.items()}
    print(f"B = {n}, {s}², float16 NCHW + float32 targets ({classes} classes), {args.threads} DALI threads, "
          f"ms per batch (median of {args.rounds} alternating rounds of 30):")
    print(f"  python_function, B tiny outputs:         {med['light']:.2f}")
    print(f"  python_function, the step's outputs:     {med['heavy']:.2f}")
    print(f"  -> taking the outputs back (copy):       {med['heavy'] - med['light']:.2f}")
    print(f"  the fused CPU kernel (mix_batch):        {med['kernel']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
