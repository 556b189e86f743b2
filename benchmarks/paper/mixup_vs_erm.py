"""Mixup vs ERM at small scale, with this project's loader: the two claims of Zhang et al. (ICLR 2018).

1. mixup lowers test error (their CIFAR-10 PreAct ResNet-18: 5.6 % -> 4.2 %);
2. mixup is far more robust to corrupted labels: it memorises the wrong labels less and keeps its test
   accuracy (their CIFAR-10, 20/50/80 % corrupted labels, ERM vs mixup α = 8 / 32).

Here: the same small CNN trained with ERM (no mixing), mixup α = 1 and mixup α = 8, on
  - digits: scikit-learn's handwritten digits (real scans, 10 classes; 1,437 train / 360 test), written as PNG
    files (upscaled to 32 px) and read through the DALI loader;
  - shapes: the built-in sample dataset (8 classes, generated JPEGs; 384 train / 96 test), scaled down to
    80 px JPEGs and cropped to 48 px;
with 0 %, 40 % and 80 % of the training labels replaced by uniformly random labels (a fixed, seeded
corruption; the test set stays clean), over several seeds. Reported per setting: final and best test accuracy,
and the training accuracy measured against the corrupted labels (memorisation).

    python benchmarks/paper/mixup_vs_erm.py                      # default: < 30 min on a 2-core CPU
    python benchmarks/paper/mixup_vs_erm.py --full               # more epochs and seeds
    python benchmarks/paper/mixup_vs_erm.py --out benchmarks/results/paper

Needs scikit-learn (for the digits) besides the project's `[cuda13]` extra.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import dali_mixup as dm

METHODS = {"ERM": 0.0, "mixup α=1": 1.0, "mixup α=8": 8.0}
PAPER = ("The paper (Zhang et al., ICLR 2018) reports, for CIFAR-10 with PreAct ResNet-18, test error 5.6 % "
         "(ERM) -> 4.2 % (mixup), and, with corrupted labels, that ERM memorises the wrong labels (near-zero "
         "training error on them) and loses test accuracy while mixup (larger α) memorises far less and keeps "
         "a much better test error; see its label-corruption table for the figures.")


def write_digits(root: Path) -> tuple:
    """sklearn's digits as 32-px PNGs: (train file-list entries, test entries) of (path, label)."""
    from PIL import Image
    from sklearn.datasets import load_digits
    digits = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(digits.target))
    split = int(0.8 * len(order))
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for k, i in enumerate(order):
        path = root / f"d{k:04d}.png"
        if not path.exists():
            img = (digits.images[i] * (255.0 / 16.0)).astype(np.uint8)
            Image.fromarray(img, "L").resize((32, 32), Image.BILINEAR).save(path)
        entries.append((str(path), int(digits.target[i])))
    return entries[:split], entries[split:]


def shapes_entries(root: Path, side: int = 80) -> tuple:
    """The built-in sample dataset, its JPEGs scaled down to ``side`` px (decoding 300-500 px JPEGs dominates
    a CPU run otherwise): (train entries, test entries)."""
    from PIL import Image
    from dali_mixup.datasets import find_dataset
    from dali_mixup.sample_data import ensure_sample_data
    data = ensure_sample_data(root / "full")
    out = []
    for split in ("train", "val"):
        ds = find_dataset(data / split)
        entries = []
        for path, label in zip(ds.files, ds.labels):
            small = root / f"small{side}" / split / Path(path).name
            if not small.exists():
                small.parent.mkdir(parents=True, exist_ok=True)
                with Image.open(path) as img:
                    img.thumbnail((side, side))
                    img.convert("RGB").save(small, quality=90)
            entries.append((str(small), label))
        out.append(entries)
    return out[0], out[1]


def corrupt(entries, fraction, num_classes, seed=1234):
    """Replace the labels of ``fraction`` of the samples by uniformly random labels (fixed by ``seed``)."""
    rng = np.random.default_rng(seed)
    labels = np.array([y for _, y in entries])
    chosen = rng.permutation(len(labels))[: int(round(fraction * len(labels)))]
    labels[chosen] = rng.integers(0, num_classes, len(chosen))
    return [(p, int(y)) for (p, _), y in zip(entries, labels)]


def write_list(path: Path, entries) -> Path:
    path.write_text("".join(f"{p} {y}\n" for p, y in entries))
    return path


class SmallCNN(nn.Module):
    def __init__(self, num_classes, width=16, downsamples=2):
        super().__init__()
        layers, c = [], 3
        for k in range(downsamples + 1):
            out = width * 2 ** k
            layers += [nn.Conv2d(c, out, 3, stride=1 if k == 0 else 2, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True), nn.Conv2d(out, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True)]
            c = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.head(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


def accuracy(model, loader):
    model.eval()
    correct = count = 0
    with torch.no_grad():
        for images, targets in loader:
            correct += (model(images).argmax(1) == targets).sum().item()  # eval loaders: class indices
            count += len(images)
    return 100.0 * correct / max(count, 1)


def train_one(setting, train_list, test_list, alpha, seed, work: Path, max_steps=None):
    """One run; returns final/best test accuracy and train accuracy on the (possibly corrupted) labels."""
    torch.manual_seed(seed)
    c, size = setting["num_classes"], setting["image_size"]
    cfg = dm.MixupConfig(c, mixup_alpha=alpha, mode="elem")  # alpha 0: the same path, never mixing (ERM)
    common = dict(batch_size=setting["batch_size"], num_classes=c, image_size=size, num_threads=2, device="cpu",
                  out_dtype=torch.float32, seed=seed)
    train = dm.create_dali_loader(train_list, mixup=cfg, scale=setting["scale"], hflip=setting["hflip"], **common)
    test = dm.create_dali_loader(test_list, train=False, **common)
    train_eval = dm.create_dali_loader(train_list, train=False, **common)
    model = SmallCNN(c, downsamples=setting["downsamples"])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)
    steps = setting["epochs"] * len(train)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps, pct_start=0.15)
    best = 0.0
    done = 0
    for epoch in range(setting["epochs"]):
        model.train()
        for images, targets in train:
            loss = torch.sum(-targets * F.log_softmax(model(images), 1), 1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            done += 1
            if max_steps and done >= max_steps:
                break
        test_acc = accuracy(model, test)
        best = max(best, test_acc)
        if max_steps and done >= max_steps:
            break
    return {"test_final": test_acc, "test_best": best, "train_on_given_labels": accuracy(model, train_eval)}


SETTINGS = {
    "digits": dict(num_classes=10, image_size=32, batch_size=64, scale=(0.7, 1.0), hflip=0.0, downsamples=2),
    "shapes": dict(num_classes=8, image_size=48, batch_size=32, scale=(0.35, 1.0), hflip=0.5, downsamples=2),
}


def run(args):
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    datasets = {}
    if "digits" in args.datasets:
        datasets["digits"] = write_digits(work / "digits")
    if "shapes" in args.datasets:
        datasets["shapes"] = shapes_entries(work / "shapes")
    results = []
    runs = [(d, noise, m, s) for d in datasets for noise in args.noise for m in METHODS for s in range(args.seeds)]
    t0 = time.perf_counter()
    for k, (name, noise, method, seed) in enumerate(runs):
        setting = dict(SETTINGS[name], epochs=args.epochs[name])
        train_entries, test_entries = datasets[name]
        noisy = corrupt(train_entries, noise, setting["num_classes"])
        train_list = write_list(work / f"{name}-train-noise{int(noise * 100)}.txt", noisy)
        test_list = write_list(work / f"{name}-test.txt", test_entries)
        r = train_one(setting, train_list, test_list, METHODS[method], seed, work, max_steps=args.max_steps)
        r.update(dataset=name, noise=noise, method=method, seed=seed)
        results.append(r)
        print(f"[{k + 1}/{len(runs)} {time.perf_counter() - t0:6.0f}s] {name} noise {noise:.0%} {method:10s} "
              f"seed {seed}: test {r['test_final']:.1f} (best {r['test_best']:.1f}), "
              f"train-on-given-labels {r['train_on_given_labels']:.1f}", flush=True)
    return {"results": results, "epochs": args.epochs, "seeds": args.seeds, "noise": args.noise,
            "seconds": time.perf_counter() - t0, "torch": torch.__version__}


def summarise(report):
    rows = {}
    for r in report["results"]:
        rows.setdefault((r["dataset"], r["noise"], r["method"]), []).append(r)
    lines = ["| dataset | corrupted labels | method | test acc, final | test acc, best | train acc on given labels |",
             "|---|---:|---|---:|---:|---:|"]
    table = {}
    for (d, noise, m), rs in rows.items():
        cells = []
        for key in ("test_final", "test_best", "train_on_given_labels"):
            vals = [r[key] for r in rs]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):.1f} ± {sd:.1f}")
            table[(d, noise, m, key)] = statistics.mean(vals)
        lines.append(f"| {d} | {noise:.0%} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", table


def plot(report, table, path):
    """Test accuracy (final) against label noise, one panel per dataset (Pillow only)."""
    from PIL import Image, ImageDraw
    names = sorted({r["dataset"] for r in report["results"]})
    noises = sorted({r["noise"] for r in report["results"]})
    colours = {"ERM": (198, 40, 40), "mixup α=1": (46, 125, 50), "mixup α=8": (21, 101, 192)}
    W, H, pad = 420, 300, 45
    img = Image.new("RGB", (W * len(names), H + 40), "white")
    d = ImageDraw.Draw(img)
    for k, name in enumerate(names):
        x0 = k * W
        d.text((x0 + pad, 8), f"{name}: final test accuracy (%) vs corrupted labels", fill="black")
        d.line([x0 + pad, H - pad + 20, x0 + W - 20, H - pad + 20], fill="black")
        d.line([x0 + pad, 30, x0 + pad, H - pad + 20], fill="black")
        for v in (0, 25, 50, 75, 100):
            y = H - pad + 20 - (H - pad - 10) * v / 100
            d.text((x0 + 10, y - 6), str(v), fill="black")
        for j, noise in enumerate(noises):
            x = x0 + pad + 30 + j * (W - pad - 80) / max(1, len(noises) - 1)
            d.text((x - 10, H - pad + 26), f"{noise:.0%}", fill="black")
        for i, (m, colour) in enumerate(colours.items()):
            pts = []
            for j, noise in enumerate(noises):
                v = table.get((name, noise, m, "test_final"))
                if v is None:
                    continue
                x = x0 + pad + 30 + j * (W - pad - 80) / max(1, len(noises) - 1)
                pts.append((x, H - pad + 20 - (H - pad - 10) * v / 100))
            if len(pts) > 1:
                d.line(pts, fill=colour, width=3)
            for p in pts:
                d.ellipse([p[0] - 4, p[1] - 4, p[0] + 4, p[1] + 4], fill=colour)
            d.text((x0 + pad + 10 + i * 110, H + 18), m.replace("α", "alpha "), fill=colour)  # PIL's font has no α
    img.save(path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="more epochs (60/60) and 5 seeds")
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--datasets", nargs="+", default=["digits", "shapes"], choices=["digits", "shapes"])
    p.add_argument("--noise", nargs="+", type=float, default=[0.0, 0.4, 0.8])
    p.add_argument("--max-steps", type=int, default=None, help="stop each run after this many steps (tests)")
    p.add_argument("--epochs-digits", type=int, default=None)
    p.add_argument("--epochs-shapes", type=int, default=None)
    p.add_argument("--work", default="/tmp/dali-mixup-paper", help="data files and lists")
    p.add_argument("--out", default=None, help="write OUT.json, OUT.md and OUT.png")
    args = p.parse_args(argv)
    args.seeds = args.seeds or (5 if args.full else 3)
    args.epochs = {"digits": args.epochs_digits or (60 if args.full else 15),
                   "shapes": args.epochs_shapes or (60 if args.full else 20)}
    report = run(args)
    text, table = summarise(report)
    header = (f"Mixup vs ERM, {args.seeds} seeds (mean ± sd), epochs {args.epochs}, measured on "
              f"{torch.get_num_threads()} CPU threads in {report['seconds'] / 60:.1f} min "
              f"(command: python benchmarks/paper/mixup_vs_erm.py{' --full' if args.full else ''}).\n\n")
    print(header + text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(header + text + "\n" + PAPER + "\n")
        plot(report, table, out.with_suffix(".png"))
    return report


if __name__ == "__main__":
    main()
    sys.exit(0)
