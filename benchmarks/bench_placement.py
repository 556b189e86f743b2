"""Where the fused kernels run: loader throughput with placement "epilogue" vs "graph", in steady state.

Configurations (``create_dali_loader`` over the same data, batch size, threads, dtype and layout):
  epilogue   backend "fused", the kernels on DALI's uint8 output after the iterator (the default)
  graph      backend "fused", the kernels inside the DALI pipeline (``dali_mixup.dali.mix``, python_function)
  nomix      backend "none": plain DALI, crop_mirror_normalize in the graph, no mixing (the ceiling)

Method: rounds; in each round every configuration, in alternating order, is built, runs ``--warmup`` batches
(pipeline start, prefetch queue filled, kernels compiled or loaded from numba's cache), then ``--batches`` timed
batches (GPU: synchronised before and after), and is deleted before the next one is built: one loader alive at a
time, so no configuration is timed while another's prefetch queue fills or drains. Reports the median img/s over
rounds, min-max, and each median over the epilogue's (same run); and this process's CPU time per batch (all its
threads), which other processes on a shared machine disturb less than wall time.

    python benchmarks/bench_placement.py [--data DIR] [--device cpu|gpu] [--batch-size 64] [--image-size 224]
        [--threads 2] [--dtype float16] [--rounds 5] [--batches 12] [--warmup 4] [--json FILE]

``measure(args)`` returns the report; ``markdown(report)`` formats it (for ``dali-mixup bench`` to fold in).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

CONFIGS = {"epilogue": dict(backend="fused", placement="epilogue"),
           "graph": dict(backend="fused", placement="graph"),
           "nomix": dict(backend="none")}
_DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}


def _batches(loader):
    """Endless batches across epochs."""
    while True:
        yield from loader


def _sync(device):
    if device == "gpu":
        torch.cuda.synchronize()


def _rate(data, name, args, num_classes):
    """Build configuration ``name``, warm it up, time ``args.batches`` batches; then free it.
    -> (img/s of wall time, this process's CPU time per batch in ms: all its threads, DALI's and numba's)."""
    import dali_mixup as dm
    cfg = dm.MixupConfig(num_classes, mixup_alpha=0.8, cutmix_alpha=1.0, mode="batch")
    loader = dm.create_dali_loader(data, batch_size=args.batch_size, num_classes=num_classes, mixup=cfg,
                                   image_size=args.image_size, device=args.device, num_threads=args.threads,
                                   out_dtype=_DTYPES[args.dtype], seed=0, **CONFIGS[name])
    stream = _batches(loader)
    for _ in range(args.warmup):
        next(stream)
    _sync(args.device)
    start, cpu = time.perf_counter(), time.process_time()
    count = sum(len(next(stream)[0]) for _ in range(args.batches))
    _sync(args.device)
    rate = count / (time.perf_counter() - start)
    cpu_ms = (time.process_time() - cpu) * 1e3 / args.batches
    del stream, loader
    gc.collect()
    return rate, cpu_ms


def measure(args) -> dict:
    from dali_mixup.sample_data import ensure_sample_data
    data = Path(args.data) if args.data else ensure_sample_data() / "train"
    num_classes = sum(1 for e in os.scandir(data) if e.is_dir())
    names = list(CONFIGS)
    rates, cpu = {name: [] for name in names}, {name: [] for name in names}
    for rnd in range(args.rounds):
        for name in (names if rnd % 2 == 0 else names[::-1]):
            rate, cpu_ms = _rate(data, name, args, num_classes)
            rates[name].append(rate)
            cpu[name].append(cpu_ms)
    base, base_cpu = statistics.median(rates["epilogue"]), statistics.median(cpu["epilogue"])
    results = {name: {"img_per_s_median": statistics.median(r), "img_per_s_min": min(r), "img_per_s_max": max(r),
                      "over_epilogue": statistics.median(r) / base, "rounds": r,
                      "cpu_ms_per_batch_median": statistics.median(cpu[name]),
                      "cpu_over_epilogue": statistics.median(cpu[name]) / base_cpu, "cpu_rounds": cpu[name]}
               for name, r in rates.items()}
    machine = {"processor": platform.processor() or platform.machine(), "python": platform.python_version(),
               "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
               "torch": torch.__version__, "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
               "gpu": torch.cuda.get_device_name(0) if args.device == "gpu" else None}
    try:
        import nvidia.dali
        machine["dali"] = nvidia.dali.__version__
    except ImportError:  # pragma: no cover
        machine["dali"] = None
    return {"date": time.strftime("%Y-%m-%d"), "machine": machine, "data": str(data), "device": args.device,
            "batch_size": args.batch_size, "image_size": args.image_size, "threads": args.threads,
            "dtype": args.dtype, "layout": "NCHW", "rounds": args.rounds, "batches": args.batches,
            "warmup": args.warmup, "results": results}


def markdown(report: dict) -> str:
    m = report["machine"]
    where = m["gpu"] or f"CPU only ({m['cpus']} cores)"
    lines = [f"Measured {report['date']} on {where}, {m['processor']}, Python {m['python']}, torch {m['torch']}, "
             f"DALI {m['dali']}; device {report['device']}, B = {report['batch_size']}, {report['image_size']}², "
             f"{report['dtype']} {report['layout']}, {report['threads']} DALI threads; {report['rounds']} rounds "
             f"(alternating order, one loader alive at a time) of {report['batches']} timed batches after "
             f"{report['warmup']} warm-up batches; data: {report['data']}.", "",
             "| placement | img/s (median) | min – max | ÷ epilogue | process CPU ms / batch | ÷ epilogue |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in report["results"].items():
        lines.append(f"| {name} | {r['img_per_s_median']:.0f} | {r['img_per_s_min']:.0f} – "
                     f"{r['img_per_s_max']:.0f} | {r['over_epilogue']:.2f} | {r['cpu_ms_per_batch_median']:.0f} | "
                     f"{r['cpu_over_epilogue']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="ImageFolder (default: the built-in sample dataset)")
    p.add_argument("--device", choices=("cpu", "gpu"), default="gpu" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", choices=tuple(_DTYPES), default="float16")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batches", type=int, default=12)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--json", default=None, help="also write the report here (and FILE.md beside it)")
    args = p.parse_args(argv)
    report = measure(args)
    text = markdown(report)
    print(text)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
