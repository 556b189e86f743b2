"""``dali-mixup bench``: end-to-end loader throughput against the peers, measured the way a user sees it.

Configurations (B images of image_size², the same dataset, the same threads/workers, the same output dtype):
  fused        ours: DALI decode + crop, the fused mix kernel as the iterator's epilogue
  fused-graph  ours with placement "graph": the same kernels inside the DALI pipeline (``dali.mix``)
  dali-nomix   the same DALI pipeline without mixing (plain DALI: crop_mirror_normalize in the graph)
  dali-ops     the same DALI pipeline with Mixup/CutMix by DALI's own operators
  dali+timm    plain DALI, then timm's Mixup on the torch tensors (what DLE/timm users do today)
  torch+timm   torch DataLoader (N workers) + torchvision transforms + timm's Mixup

Steady state: one configuration's loader is alive at a time (built, ``warmup`` batches discarded, ``batches``
timed, shut down), so no prefetch queue fills while another configuration is timed; repetitions alternate the
order of the configurations. Reported per configuration: the median, min and max of images/s over repetitions,
ours ÷ this (ratio of medians, and the range of the same-repetition ratios, a measure of the noise), and where
the consuming thread's time goes: waiting on the producer (DALI, or the DataLoader's workers), the epilogue
(mixing, normalising, casting: everything after the producer handed the batch over) and the rest.
"""

from __future__ import annotations

import argparse

import gc
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from ..config import DTYPES
from ..resolution import PerBatchSizes

log = logging.getLogger("dali_mixup")

CONFIGS = ("fused", "fused-graph", "dali-nomix", "dali-ops", "dali+timm", "torch+timm")
SAMPLES = ("photos", "shapes")
# ours ÷ configuration, per device kind: the targets the report checks
GOALS = {"cpu": {"dali-nomix": 1.0, "torch+timm": 1.8},
         "gpu": {"dali-nomix": 0.99, "dali+timm": 1.0, "torch+timm": 5.0}}
_MIX = dict(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.0)


class _Clock:
    """Seconds the consuming thread spent waiting on the producer and in the epilogue, and the crop side of each
    batch, since the last reset."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.wait = self.epilogue = 0.0
        self.sides = []


class _TimedIterator:
    """Wraps an iterator: adds the time spent in its ``__next__`` to ``clock.wait``; delegates everything else."""

    def __init__(self, inner, clock: _Clock):
        self._inner, self._clock = inner, clock

    def __next__(self):
        t = time.perf_counter()
        try:
            return next(self._inner)
        finally:
            self._clock.wait += time.perf_counter() - t

    def __iter__(self):
        return self

    def __len__(self):
        return len(self._inner)

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _Session:
    """One configuration's live loader. ``step()`` -> images in the batch; ``close()`` shuts it down."""

    def __init__(self, next_batch: Callable[[], int], close: Callable[[], None], clock: _Clock):
        self.step, self.close, self.clock = next_batch, close, clock


def _cycle(make_iter):
    """in: a callable returning a fresh epoch iterator -> out: endless batches across epochs."""
    while True:
        for batch in make_iter():
            yield batch


def _timm_mixer(num_classes):
    from timm.data.mixup import Mixup
    return Mixup(num_classes=num_classes, **_MIX)


def _dali_session(data, backend, args, device, num_classes, timm_mix=False, placement="epilogue") -> _Session:
    """in: ImageFolder, backend fused|none|dali -> out: a session over ``create_dali_loader``; the DALI
    iterator inside it (each epoch's pipeline's, put in use by ``loader._pipes.use``) and the start of each
    epoch's pipeline (``loader._pipes.start_pass``) are timed as the producer, the rest of the loader's
    ``__next__`` is epilogue."""
    from .. import loader as loader_module
    from ..config import MixupConfig
    cfg = MixupConfig(num_classes, **_MIX)
    loader = loader_module.create_dali_loader(
        data, batch_size=args.batch_size, num_classes=num_classes, image_size=args.image_size,
        mixup=None if backend == "none" else cfg, backend=backend, device=device, num_threads=args.threads,
        seed=args.seed, out_dtype=DTYPES[args.dtype], skip_corrupt=getattr(args, "skip_corrupt", False),
        placement=placement, zero_copy=backend == "none")  # plain DALI as its users run it: zero-copy
    clock, pipes = _Clock(), loader._pipes

    def timed_use(built, use=pipes.use):  # every pipeline the loader takes on: its iterator timed
        use(built)
        if pipes.owned.iterator is not None:
            pipes.owned.iterator = _TimedIterator(pipes.owned.iterator, clock)

    def timed_start(*args, start=pipes.start_pass):  # a new epoch's pipeline (made or waited for): the producer's
        t = time.perf_counter()
        try:
            start(*args)
        finally:
            clock.wait += time.perf_counter() - t

    pipes.use, pipes.start_pass = timed_use, timed_start
    pipes.owned.iterator = _TimedIterator(pipes.owned.iterator, clock)
    mixer = _timm_mixer(num_classes) if timm_mix else None
    stream = _cycle(lambda: loader)

    def step():
        t = time.perf_counter()
        wait = clock.wait
        images, targets = next(stream)
        if mixer is not None:
            images, targets = mixer(images, targets.argmax(1))
        clock.epilogue += time.perf_counter() - t - (clock.wait - wait)
        clock.sides.append(images.shape[-1])  # NCHW
        return len(images)

    def close():
        nonlocal loader, stream
        loader.close()  # its pipelines go now (the timing hooks above tie the loader in a cycle)
        del loader, stream

    return _Session(step, close, clock)


def _torch_session(data, args, device, num_classes) -> _Session:
    """in: ImageFolder -> out: a session over DataLoader(workers) + torchvision + timm's Mixup, cast to --dtype."""
    from torchvision import datasets, transforms
    tf = transforms.Compose([
        transforms.RandomResizedCrop(args.image_size),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    from ..datasets import IMAGE_EXTENSIONS, find_corrupt

    def decodable(path):  # --skip-corrupt: the same cheap check as the DALI loader's
        return path.lower().endswith(IMAGE_EXTENSIONS) and not find_corrupt([path])
    ds = datasets.ImageFolder(str(data), transform=tf,
                              is_valid_file=decodable if getattr(args, "skip_corrupt", False) else None)
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.workers, persistent_workers=args.workers > 0,
                                         pin_memory=device == "gpu")
    mixer = _timm_mixer(num_classes)
    dev = torch.device("cuda" if device == "gpu" else "cpu")
    dtype = DTYPES[args.dtype]
    clock = _Clock()
    stream = _TimedIterator(_cycle(lambda: loader), clock)

    def step():
        images, labels = next(stream)
        t = time.perf_counter()
        images, labels = images.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
        images, targets = mixer(images, labels)
        images = images.to(dtype)
        clock.epilogue += time.perf_counter() - t
        return len(images)

    def close():
        nonlocal loader, stream
        del loader, stream  # the workers stop with the last reference to their iterator

    return _Session(step, close, clock)


def _machine(device) -> dict:
    import numpy
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "processor": _cpu_name(), "torch": torch.__version__, "numpy": numpy.__version__, "device": device}
    try:
        import nvidia.dali
        info["dali"] = nvidia.dali.__version__
    except ImportError:
        info["dali"] = None
    if torch.cuda.is_available():
        import subprocess
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True).stdout.strip()
        except OSError:
            info["driver"] = None
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process's threads (DALI's included) and of its live child processes
    (DataLoader workers; Linux /proc). A noise-resistant measure of the work per batch on a shared machine."""
    total = time.process_time()
    me, tick = str(os.getpid()), os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if fields[1] == me:  # fields[1]: the parent's pid; [11], [12]: utime, stime in clock ticks
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _load_average():
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _progress(done, total, label):
    width = 30
    filled = int(width * done / total)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:<14s}")
    sys.stderr.flush()
    if done == total:
        sys.stderr.write("\n")


def _measure(session: _Session, warmup: int, batches: int) -> dict:
    """in: a live session -> out: one repetition: images/s and seconds per batch waiting / in the epilogue / rest."""
    for _ in range(warmup):
        session.step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    session.clock.reset()
    cpu = _cpu_seconds()
    t = time.perf_counter()
    count = sum(session.step() for _ in range(batches))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    total = time.perf_counter() - t
    cpu = _cpu_seconds() - cpu
    wait, epilogue = session.clock.wait, session.clock.epilogue
    return {"img_per_s": count / total, "wait_s": wait / batches, "epilogue_s": epilogue / batches,
            "rest_s": (total - wait - epilogue) / batches, "cpu_s": cpu / batches, "sides": session.clock.sides}


def _resolve_data(args) -> Path:
    from ..sample_data import ensure_photo_data, ensure_sample_data
    if args.data is not None:
        data = Path(args.data)
        data = data / "train" if (data / "train").is_dir() else data  # --data-dir means what it means for train
    elif args.sample == "photos":
        data = ensure_photo_data() / "train"
    else:
        data = ensure_sample_data() / "train"
    if not data.is_dir():
        raise ValueError(f"--data-dir {data}: not a directory (bench needs an ImageFolder)")
    return data


def _summarise(names, reps: Dict[str, List[dict]]) -> dict:
    results = {}
    for name in names:
        r = reps[name]
        rates = [x["img_per_s"] for x in r]
        results[name] = {"img_per_s_median": statistics.median(rates), "img_per_s_min": min(rates),
                         "img_per_s_max": max(rates), "repetitions": len(rates),
                         **{f"{k}_ms_per_batch": 1e3 * statistics.median(x[f"{k}_s"] for x in r)
                            for k in ("wait", "epilogue", "rest", "cpu")},
                         "per_repetition": r}
        if "fused" in reps:
            paired = [f["img_per_s"] / x["img_per_s"] for f, x in zip(reps["fused"], r)]
            ours = statistics.median(f["img_per_s"] for f in reps["fused"])
            results[name].update(ours_over_this=ours / statistics.median(rates),
                                 ours_over_this_paired_min=min(paired), ours_over_this_paired_max=max(paired),
                                 cpu_this_over_ours=results[name]["cpu_ms_per_batch"] / max(
                                     1e-9, 1e3 * statistics.median(f["cpu_s"] for f in reps["fused"])))
    return results


def _sizes(args) -> list:
    """The crop sizes ``--img-sizes`` measures: each, then (two or more) a size per batch chosen among them."""
    sizes = list(args.img_sizes)
    return sizes + ([PerBatchSizes(tuple(sizes))] if len(sizes) > 1 else [])


def _size_key(size) -> str:
    return "per-batch" if isinstance(size, PerBatchSizes) else str(size)


def makers_at(data, args, device, num_classes):
    """size (an int or a ``PerBatchSizes``) -> {fused, dali-nomix: session maker} at that crop size (the same
    settings otherwise)."""
    def at(size):
        sized = argparse.Namespace(**{**vars(args), "image_size": size})
        return {"fused": lambda: _dali_session(data, "fused", sized, device, num_classes),
                "dali-nomix": lambda: _dali_session(data, "none", sized, device, num_classes)}
    return at


def _by_size(args, makers) -> dict:
    """img/s of fused and dali-nomix at each of ``--img-sizes`` and with a size per batch among them (one loader
    alive at a time, sizes and the two configurations alternating between repetitions) -> {size: {name: summary}}
    (keys: the size, "per-batch")."""
    order = [(size, name) for size in _sizes(args) for name in ("fused", "dali-nomix")]
    reps = {key: [] for key in order}
    done, total = 0, args.repeats * len(order)
    for rep in range(args.repeats):
        for size, name in (order if rep % 2 == 0 else order[::-1]):
            session = makers(size)[name]()
            try:
                reps[(size, name)].append(_measure(session, args.warmup, args.batches))
            finally:
                session.close()
                gc.collect()
            done += 1
            _progress(done, total, f"{name}@{_size_key(size)}")
    out = {_size_key(size): _summarise(["fused", "dali-nomix"], {n: reps[(size, n)] for n in ("fused", "dali-nomix")})
           for size in _sizes(args)}
    if "per-batch" in out:  # what the fixed sizes' rates give for the sizes the timed batches had
        for name, summary in out["per-batch"].items():
            rates = {side: out[str(side)][name]["img_per_s_median"] for side in args.img_sizes}
            summary["img_per_s_expected"] = statistics.median(
                len(r["sides"]) / sum(1 / rates[side] for side in r["sides"]) for r in summary["per_repetition"])
    return out


def run(args) -> dict:
    """in: parsed ``bench`` arguments -> out: the report (machine, settings, results per configuration, goals)."""
    device = args.device
    if device == "auto":
        device = "gpu" if torch.cuda.is_available() else "cpu"
    data = _resolve_data(args)
    num_classes = sum(1 for e in os.scandir(data) if e.is_dir())
    if num_classes == 0:
        raise ValueError(f"--data-dir {data}: no class sub-folders")
    makers = {
        "fused": lambda: _dali_session(data, "fused", args, device, num_classes),
        "fused-graph": lambda: _dali_session(data, "fused", args, device, num_classes, placement="graph"),
        "dali-nomix": lambda: _dali_session(data, "none", args, device, num_classes),
        "dali-ops": lambda: _dali_session(data, "dali", args, device, num_classes),
        "dali+timm": lambda: _dali_session(data, "none", args, device, num_classes, timm_mix=True),
        "torch+timm": lambda: _torch_session(data, args, device, num_classes),
    }
    names = [c for c in CONFIGS if c in args.configs]
    reps: Dict[str, List[dict]] = {name: [] for name in names}
    load_before = _load_average()
    done, total = 0, args.repeats * len(names)
    for rep in range(args.repeats):
        for name in (names if rep % 2 == 0 else names[::-1]):  # alternate the order between repetitions
            session = makers[name]()
            try:
                reps[name].append(_measure(session, args.warmup, args.batches))
            finally:
                session.close()
                gc.collect()
            done += 1
            _progress(done, total, name)
    results = _summarise(names, reps)
    by_size = _by_size(args, makers_at(data, args, device, num_classes)) if args.img_sizes else {}
    goals = {name: {"goal": goal, "ours_over_this": results[name]["ours_over_this"],
                    "met": results[name]["ours_over_this"] >= goal}
             for name, goal in GOALS[device].items() if name in results and "fused" in results}
    return {"machine": _machine(device), "data": str(data), "batch_size": args.batch_size,
            "image_size": args.image_size, "dtype": args.dtype, "layout": "NCHW", "dali_threads": args.threads,
            "dataloader_workers": args.workers, "warmup_batches": args.warmup, "batches": args.batches,
            "repetitions": args.repeats, "seed": args.seed, "date": time.strftime("%Y-%m-%d"),
            "load_average_before": load_before, "load_average_after": _load_average(),
            "conditions": args.conditions, "results": results, "goals": goals, "by_size": by_size,
            "not_run": [c for c in CONFIGS if c not in names]}


def markdown(report: dict) -> str:
    """in: a report from ``run`` -> out: its Markdown table, with the setting, the time split and the goals."""
    m = report["machine"]
    where = m.get("gpu") or f"CPU only ({m['cpu_count']} cores)"
    load = report.get("load_average_before")
    lines = [f"Measured {report['date']} on {where}, {m['processor']}, Python {m['python']}, torch {m['torch']}, "
             f"DALI {m['dali']}" + (f", driver {m.get('driver')}" if m.get("driver") else "") + ".",
             f"B = {report['batch_size']}, {report['image_size']}², {report['dtype']} {report['layout']} for every "
             f"configuration, {report['dali_threads']} DALI threads, {report['dataloader_workers']} DataLoader "
             f"workers; steady state: one loader alive at a time, {report['warmup_batches']} warm-up + "
             f"{report['batches']} timed batches, {report['repetitions']} alternating repetitions; "
             f"data: {report['data']}." + (f" Load average before: {load[0]:.2f}." if load else "")
             + (f" Conditions: {report['conditions']}." if report.get("conditions") else ""), "",
             "| configuration | img/s (median) | min – max | ours ÷ this (same-repetition range) "
             "| waiting on producer | epilogue (mixing) | rest | CPU time | its CPU ÷ ours |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in report["results"].items():
        ratio = cpu_ratio = "—"
        if r.get("ours_over_this"):
            ratio = (f"{r['ours_over_this']:.2f}× ({r['ours_over_this_paired_min']:.2f}–"
                     f"{r['ours_over_this_paired_max']:.2f})")
            cpu_ratio = f"{r['cpu_this_over_ours']:.2f}×"
        lines.append(f"| {name} | {r['img_per_s_median']:.0f} | {r['img_per_s_min']:.0f} – {r['img_per_s_max']:.0f} "
                     f"| {ratio} | {r['wait_ms_per_batch']:.1f} ms | {r['epilogue_ms_per_batch']:.1f} ms "
                     f"| {r['rest_ms_per_batch']:.1f} ms | {r['cpu_ms_per_batch']:.0f} ms | {cpu_ratio} |")
    for name in report["not_run"]:
        lines.append(f"| {name} | not run | | | | | | | |")
    if report.get("by_size"):
        lines += ["", "By crop size (fused vs dali-nomix, the same settings otherwise):", "",
                  "| size | fused img/s | dali-nomix img/s | fused ÷ dali-nomix (same-repetition range) |",
                  "|---:|---:|---:|---:|"]
        fixed = [k for k in report["by_size"] if k != "per-batch"]
        for size, r in report["by_size"].items():
            d = r["dali-nomix"]
            label = f"{size}²" if size != "per-batch" else "a size per batch (" + " / ".join(fixed) + ")"
            lines.append(f"| {label} | {r['fused']['img_per_s_median']:.0f} | {d['img_per_s_median']:.0f} | "
                         f"{d['ours_over_this']:.3f}× ({d['ours_over_this_paired_min']:.3f}–"
                         f"{d['ours_over_this_paired_max']:.3f}) |")
        for name, r in report["by_size"].get("per-batch", {}).items():
            rate, expected = r["img_per_s_median"], r["img_per_s_expected"]
            lines += ["", f"A size per batch, {name}: {rate:.0f} img/s, {rate / expected:.3f}× the {expected:.0f} "
                          "img/s the fixed sizes' rates give for the sizes of its timed batches."]
    if report["goals"]:
        lines += ["", "Goals (ours ÷ this, median): " + "; ".join(
            f"{name} {g['ours_over_this']:.3f}× vs ≥ {g['goal']:.2f}× ({'met' if g['met'] else 'missed'})"
            for name, g in report["goals"].items()) + "."]
    return "\n".join(lines) + "\n"


def bar_chart(report: dict, path: Path) -> None:
    """in: a report -> out: a PNG chart at ``path``: images/s per configuration, the median as a bar and the
    min–max over the timed batches as an error bar (matplotlib, the ``bench`` extra)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    items = list(report["results"].items())
    names = [name for name, _ in items]
    medians = [r["img_per_s_median"] for _, r in items]
    low = [r["img_per_s_median"] - r["img_per_s_min"] for _, r in items]
    high = [r["img_per_s_max"] - r["img_per_s_median"] for _, r in items]
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(items) + 1.6))
    colours = ["#2e7d32" if name.startswith("fused") else "#78909c" for name in names]
    ax.barh(names, medians, xerr=[low, high], color=colours, capsize=3, error_kw={"elinewidth": 1})
    ax.invert_yaxis()
    ax.set_xlabel("images per second (median; error bar: min – max over timed batches)")
    ax.set_xlim(0, max(r["img_per_s_max"] for _, r in items) * 1.08 or 1.0)
    ax.grid(axis="x", alpha=0.3)
    device = report["machine"].get("gpu") or "CPU"
    ax.set_title(f"B={report['batch_size']}, {report['image_size']} px, {report['dtype']}, {device}, steady state",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


RESULTS_DIR = "bench-results"


def default_output(report: dict, now: Optional[float] = None) -> Path:
    """in: a report, the time (default: now) -> out: where its results go without ``--json``:
    ``bench-results/bench-<device>-<dtype>-<YYYYmmdd-HHMMSS>.json`` in the current folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return Path(RESULTS_DIR) / f"bench-{report['machine']['device']}-{report['dtype']}-{stamp}.json"


def write_results(report: dict, text: str, out: Path) -> List[Path]:
    """in: a report, its Markdown, the JSON path -> out: the files written: ``out`` (JSON), ``out`` .md and .png
    beside it (the chart only with matplotlib, the bench extra; without it a warning says so)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(text)
    written = [out, out.with_suffix(".md")]
    try:
        bar_chart(report, out.with_suffix(".png"))
        written.append(out.with_suffix(".png"))
    except ImportError as exc:
        log.warning("no chart (%s): pip install 'dali-mixup[bench]' for matplotlib", exc)
    return written


def main(args) -> int:
    """in: parsed ``bench`` arguments -> out: exit status; prints the table and writes JSON/MD/PNG (to ``--json``
    FILE, else to ``default_output``), printing where."""
    report = run(args)
    text = markdown(report)
    print(text)
    out = Path(args.json) if args.json else default_output(report)
    written = write_results(report, text, out)
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0
