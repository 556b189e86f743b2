"""The reader's speed, before and after issue 22's epoch order: DALI's ``readers.file`` alone (no decode), on a
list of files the size of ImageNet's JPEGs (about 110 KB), CPU-only pipeline.

- ``window`` (before): the sorted list, ``random_shuffle=True``, ``initial_fill=1024`` (a 1,024-sample shuffle
  buffer, the same permutation for every seed and epoch).
- ``permuted`` (after): the list in ``epoch_order(n, seed, epoch)``, reader shuffle off.
- each also with ``dont_use_mmap=True`` (files read with read() instead of mapped).

Each round builds a fresh pipeline per configuration (as the loader does per epoch), reads one epoch, and times
it (build excluded, reported apart); the configurations' order rotates from round to round; reported: medians,
and the median of each configuration's rate over the window's in the same round (robust to a shared machine's
drifting load), and the process's CPU time per image (the work, which a busy machine disturbs less). The files are
in the page cache after the first round (a warm-cache figure: it measures the reader, not the disk).

Run: python benchmarks/bench_reader_order.py [--files 8000] [--rounds 5] [--threads 2] [--dir /tmp/readerbench]
"""

import argparse
import os
import platform
import statistics
import time

import numpy as np


def make_files(folder, count, size):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    files = []
    for i in range(count):
        path = os.path.join(folder, f"{i:06d}.jpg")
        if not os.path.exists(path) or os.path.getsize(path) != size:
            with open(path, "wb") as fh:
                fh.write(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        files.append(path)
    return files


def read_epoch(files, *, batch_size, threads, permuted, seed=0, epoch=0, mmap=True):
    from nvidia.dali import fn, pipeline_def
    from dali_mixup.order import epoch_order, reorder

    labels = list(range(len(files)))
    if permuted:
        order = epoch_order(len(files), seed, epoch)
        files, labels = reorder(files, order), reorder(labels, order)
        reader = dict(random_shuffle=False)
    else:
        reader = dict(random_shuffle=True, initial_fill=1024, seed=seed)

    @pipeline_def(batch_size=batch_size, num_threads=threads, device_id=None, prefetch_queue_depth=2)
    def graph():
        data, label = fn.readers.file(files=files, labels=labels, name="Reader", pad_last_batch=True,
                                      dont_use_mmap=not mmap, **reader)
        return data, label

    t0 = time.perf_counter()
    pipe = graph()
    pipe.build()
    built = time.perf_counter() - t0
    runs = -(-len(files) // batch_size)
    t0, c0 = time.perf_counter(), time.process_time()
    seen = []
    for _ in range(runs):
        data, label = pipe.run()
        seen.append(np.array(label.as_tensor()).reshape(-1))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    del pipe
    return built, len(files) / seconds, cpu * 1e6 / len(files), np.concatenate(seen)[:len(files)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--files", type=int, default=8000)
    p.add_argument("--size", type=int, default=110_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--dir", default="/tmp/readerbench")
    a = p.parse_args()
    files = make_files(a.dir, a.files, a.size)
    names = ["window", "permuted", "window, no mmap", "permuted, no mmap"]
    rates, builds, cpus = {n: [] for n in names}, {n: [] for n in names}, {n: [] for n in names}
    orders = {}
    for r in range(a.rounds + 1):  # round 0 warms the page cache, discarded
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:  # the order rotates from round to round
            built, rate, cpu, order = read_epoch(files, batch_size=a.batch_size, threads=a.threads,
                                            permuted=name.startswith("permuted"), epoch=r,
                                            mmap="no mmap" not in name)
            orders.setdefault(name, []).append(order)
            if r:
                rates[name].append(rate)
                builds[name].append(built)
                cpus[name].append(cpu)
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s) "
          f"seen, DALI threads {a.threads}; {a.files} files of {a.size} bytes, batch {a.batch_size}, "
          f"{a.rounds} rounds, warm page cache")
    print("| reader | img/s (median) | min..max | ÷ window, same round (median, range) | CPU µs per image "
          "(median) | build s (median) |")
    print("|---|---|---|---|---|---|")
    for name in rates:
        ratio = [r / w for r, w in zip(rates[name], rates["window"])]
        print(f"| {name} | {statistics.median(rates[name]):,.0f} | {min(rates[name]):,.0f}..{max(rates[name]):,.0f} "
              f"| {statistics.median(ratio):.2f} ({min(ratio):.2f}..{max(ratio):.2f}) "
              f"| {statistics.median(cpus[name]):.1f} "
              f"| {statistics.median(builds[name]):.3f} |")
    for name, seq in orders.items():
        rho = np.corrcoef(np.argsort(seq[0]), np.argsort(seq[1]))[0, 1]
        print(f"{name}: correlation of sample positions between two epochs: {rho:.3f}")


if __name__ == "__main__":
    main()
