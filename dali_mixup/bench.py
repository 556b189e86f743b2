"""``dali-mixup bench``: end-to-end loader throughput against the peers, in one run.

Configurations (all B images of image_size², the same dataset, the same threads/workers):
  fused        ours: DALI decode + crop, the fused mix kernel as the iterator's epilogue
  dali-nomix   the same DALI pipeline without mixing (plain DALI: crop_mirror_normalize in the graph)
  dali-ops     the same DALI pipeline with Mixup/CutMix by DALI's own operators
  dali+timm    plain DALI, then timm's Mixup on the torch tensors (what DLE/timm users do today)
  torch+timm   torch DataLoader (N workers) + torchvision transforms + timm's Mixup

Alternating rounds after a warm-up round; each round runs every configuration for the same number of batches;
reports medians and spread of images/s and each median's ratio to ours.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

CONFIGS = ("fused", "dali-nomix", "dali-ops", "dali+timm", "torch+timm")


def _mixup_cfg(num_classes):
    import dali_mixup as dm
    return dm.MixupConfig(num_classes, mixup_alpha=0.8, cutmix_alpha=1.0, mode="batch")


def _cycle(make_iter):
    """Endless batches across epochs."""
    while True:
        for batch in make_iter():
            yield batch


def _dali_runner(data, backend, args, device, num_classes, timm_mix=False):
    from .loader import create_dali_loader
    cfg = _mixup_cfg(num_classes)
    loader = create_dali_loader(data, batch_size=args.batch_size, num_classes=num_classes,
                                image_size=args.image_size, mixup=None if backend == "none" else cfg,
                                backend=backend, device=device, num_threads=args.threads, seed=args.seed,
                                skip_corrupt=getattr(args, "skip_corrupt", False))
    mixer = None
    if timm_mix:
        from timm.data.mixup import Mixup
        mixer = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.0, num_classes=num_classes)
    stream = _cycle(lambda: loader)

    def step():
        images, targets = next(stream)
        if mixer is not None:
            images, targets = mixer(images, targets.argmax(1))
        return len(images)

    return step


def _torch_runner(data, args, num_classes):
    from timm.data.mixup import Mixup
    from torchvision import datasets, transforms
    tf = transforms.Compose([
        transforms.RandomResizedCrop(args.image_size),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    from .datasets import IMAGE_EXTENSIONS, find_corrupt

    def decodable(path):  # --skip-corrupt: the same cheap check as the DALI loader's
        return path.lower().endswith(IMAGE_EXTENSIONS) and not find_corrupt([path])
    ds = datasets.ImageFolder(str(data), transform=tf,
                              is_valid_file=decodable if getattr(args, "skip_corrupt", False) else None)
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.workers, persistent_workers=args.workers > 0,
                                         pin_memory=torch.cuda.is_available())
    mixer = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.0, num_classes=num_classes)
    dev = torch.device("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu")
    stream = _cycle(lambda: loader)

    def step():
        images, labels = next(stream)
        images, labels = images.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
        images, targets = mixer(images, labels)
        return len(images)

    return step


def _machine(device) -> dict:
    import numpy
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
            "numpy": numpy.__version__, "device": device}
    try:
        import nvidia.dali
        info["dali"] = nvidia.dali.__version__
    except ImportError:
        info["dali"] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        try:
            import subprocess
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True).stdout.strip()
        except OSError:
            info["driver"] = None
    return info


def _progress(done, total, label):
    width = 30
    filled = int(width * done / total)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:<14s}")
    sys.stderr.flush()
    if done == total:
        sys.stderr.write("\n")


def run(args) -> dict:
    from .sample_data import ensure_sample_data
    device = args.device
    if device == "auto":
        device = "gpu" if torch.cuda.is_available() else "cpu"
    if args.data is None:
        data = ensure_sample_data() / "train"
    else:
        data = Path(args.data)
        data = data / "train" if (data / "train").is_dir() else data  # --data means what it means for train
    if not data.is_dir():
        raise SystemExit(f"error: --data {data}: not a directory (bench needs an ImageFolder)")
    num_classes = sum(1 for e in os.scandir(data) if e.is_dir())
    if num_classes == 0:
        raise SystemExit(f"error: --data {data}: no class sub-folders")

    makers: Dict[str, Callable[[], Callable[[], int]]] = {
        "fused": lambda: _dali_runner(data, "fused", args, device, num_classes),
        "dali-nomix": lambda: _dali_runner(data, "none", args, device, num_classes),
        "dali-ops": lambda: _dali_runner(data, "dali", args, device, num_classes),
        "dali+timm": lambda: _dali_runner(data, "none", args, device, num_classes, timm_mix=True),
        "torch+timm": lambda: _torch_runner(data, args, num_classes),
    }
    names = [c for c in CONFIGS if c in args.configs]
    steps = {name: makers[name]() for name in names}
    rates: Dict[str, List[float]] = {name: [] for name in names}
    total = (args.rounds + 1) * len(names)
    done = 0
    for rnd in range(args.rounds + 1):  # round 0 warms up (compilation, worker start, caches) and is discarded
        for name in (names if rnd % 2 == 0 else names[::-1]):  # alternate the order between rounds
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t = time.perf_counter()
            count = sum(steps[name]() for _ in range(args.batches))
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if rnd > 0:
                rates[name].append(count / (time.perf_counter() - t))
            done += 1
            _progress(done, total, name)
    ours = statistics.median(rates["fused"]) if "fused" in rates else None
    results = {}
    for name in names:
        med = statistics.median(rates[name])
        results[name] = {"img_per_s_median": med, "img_per_s_min": min(rates[name]),
                         "img_per_s_max": max(rates[name]), "rounds": len(rates[name]),
                         "ours_over_this": (ours / med) if ours else None}
    return {"machine": _machine(device), "data": str(data), "batch_size": args.batch_size,
            "image_size": args.image_size, "dali_threads": args.threads, "dataloader_workers": args.workers,
            "batches_per_round": args.batches, "rounds": args.rounds, "seed": args.seed,
            "date": time.strftime("%Y-%m-%d"), "results": results,
            "not_run": [c for c in CONFIGS if c not in names]}


def markdown(report: dict) -> str:
    m = report["machine"]
    where = m.get("gpu") or f"CPU only ({m['cpu_count']} cores)"
    lines = [f"Measured {report['date']} on {where}, {m['processor']}, Python {m['python']}, torch {m['torch']}, "
             f"DALI {m['dali']}" + (f", driver {m.get('driver')}" if m.get("driver") else "") + ".",
             f"B = {report['batch_size']}, {report['image_size']}², {report['dali_threads']} DALI threads, "
             f"{report['dataloader_workers']} DataLoader workers, {report['rounds']} alternating rounds of "
             f"{report['batches_per_round']} batches after a warm-up round; data: {report['data']}.", "",
             "| configuration | img/s (median) | min – max | ours ÷ this |", "|---|---:|---:|---:|"]
    for name, r in report["results"].items():
        ratio = f"{r['ours_over_this']:.2f}×" if r["ours_over_this"] else "—"
        lines.append(f"| {name} | {r['img_per_s_median']:.0f} | {r['img_per_s_min']:.0f} – {r['img_per_s_max']:.0f} "
                     f"| {ratio} |")
    for name in report["not_run"]:
        lines.append(f"| {name} | not run | | |")
    return "\n".join(lines) + "\n"


def bar_chart(report: dict, path: Path) -> None:
    """A PNG bar chart of the medians (Pillow only)."""
    from PIL import Image, ImageDraw
    items = list(report["results"].items())
    top = max(r["img_per_s_max"] for _, r in items) or 1.0
    w, row, left = 760, 44, 130
    img = Image.new("RGB", (w, 50 + row * len(items)), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 12), f"images/s, B={report['batch_size']}, {report['image_size']}px "
                     f"({report['machine'].get('gpu') or 'CPU'})", fill="black")
    for k, (name, r) in enumerate(items):
        y = 40 + k * row
        length = int((w - left - 90) * r["img_per_s_median"] / top)
        d.text((10, y + 10), name, fill="black")
        d.rectangle([left, y + 4, left + length, y + row - 10], fill=(46, 125, 50) if name == "fused" else (120, 144, 156))
        lo = left + int((w - left - 90) * r["img_per_s_min"] / top)
        hi = left + int((w - left - 90) * r["img_per_s_max"] / top)
        d.line([lo, y + row // 2 - 3, hi, y + row // 2 - 3], fill="black", width=2)
        d.text((left + length + 8, y + 10), f"{r['img_per_s_median']:.0f}", fill="black")
    img.save(path)


def main(args) -> int:
    report = run(args)
    text = markdown(report)
    print(text)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(text)
        bar_chart(report, out.with_suffix(".png"))
        print(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")
    return 0
