"""The reader's speed, before and after issue 22's epoch order: DALI's ``readers.file`` alone (no decode), on a
list of files the size of ImageNet's JPEGs (about 110 KB), CPU-only pipeline.

- ``window`` (before): the sorted list, ``random_shuffle=True``, ``initial_fill=1024`` (a 1,024-sample shuffle
  buffer, the same permutation for every seed and epoch).
- ``permuted`` (after): the list in ``epoch_order(n, seed, epoch)``, reader shuffle off.

Each round builds a fresh pipeline per configuration (as the loader does per epoch), reads one epoch, and times
it (build excluded, reported apart); rounds alternate the configurations; medians are reported. The files are
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


def read_epoch(files, *, batch_size, threads, permuted, seed=0, epoch=0):
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
        data, label = fn.readers.file(files=files, labels=labels, name="Reader", pad_last_batch=True, **reader)
        return data, label

    t0 = time.perf_counter()
    pipe = graph()
    pipe.build()
    built = time.perf_counter() - t0
    runs = -(-len(files) // batch_size)
    t0 = time.perf_counter()
    seen = []
    for _ in range(runs):
        data, label = pipe.run()
        seen.append(np.array(label.as_tensor()).reshape(-1))
    seconds = time.perf_counter() - t0
    del pipe
    return built, len(files) / seconds, np.concatenate(seen)[:len(files)]


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
    rates = {"window": [], "permuted": []}
    builds = {"window": [], "permuted": []}
    orders = {}
    for r in range(a.rounds + 1):  # round 0 warms the page cache, discarded
        names = list(rates) if r % 2 == 0 else list(rates)[::-1]
        for name in names:
            built, rate, order = read_epoch(files, batch_size=a.batch_size, threads=a.threads,
                                            permuted=name == "permuted", epoch=r)
            orders.setdefault(name, []).append(order)
            if r:
                rates[name].append(rate)
                builds[name].append(built)
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s) "
          f"seen, DALI threads {a.threads}; {a.files} files of {a.size} bytes, batch {a.batch_size}, "
          f"{a.rounds} rounds, warm page cache")
    print("| reader | img/s (median) | min..max | build s (median) |")
    print("|---|---|---|---|")
    for name in rates:
        print(f"| {name} | {statistics.median(rates[name]):,.0f} | {min(rates[name]):,.0f}..{max(rates[name]):,.0f} "
              f"| {statistics.median(builds[name]):.3f} |")
    for name, seq in orders.items():
        rho = np.corrcoef(np.argsort(seq[0]), np.argsort(seq[1]))[0, 1]
        print(f"{name}: correlation of sample positions between two epochs: {rho:.3f}")


if __name__ == "__main__":
    main()
