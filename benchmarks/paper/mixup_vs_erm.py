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

    python benchmarks/paper/mixup_vs_erm.py               # default: digits, 60 epochs, 3 seeds, ~30 min on 2 cores
    python benchmarks/paper/mixup_vs_erm.py --full        # both datasets, 5 seeds (hours on a CPU)
    python benchmarks/paper/mixup_vs_erm.py --out benchmarks/results/paper
    python benchmarks/paper/mixup_vs_erm.py --noise 0.8 --out part-80   # a part; then --combine part-*.json

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


def train_one(setting, train_list, test_list, alpha, seed, work: Path, max_steps=None, eval_every=5):
    """One run: final/best test accuracy, train accuracy on the (possibly corrupted) labels, and the history per
    epoch (test accuracy every epoch; accuracy on the given labels every ``eval_every`` epochs and at the end)."""
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
    history = []
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
        last = epoch + 1 == setting["epochs"] or bool(max_steps and done >= max_steps)
        given = accuracy(model, train_eval) if last or (epoch + 1) % eval_every == 0 else None
        history.append({"epoch": epoch + 1, "test": accuracy(model, test), "train_on_given_labels": given})
        if last:
            break
    return {"test_final": history[-1]["test"], "test_best": max(h["test"] for h in history),
            "train_on_given_labels": history[-1]["train_on_given_labels"], "history": history}


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
        r = train_one(setting, train_list, test_list, METHODS[method], seed, work, max_steps=args.max_steps,
                      eval_every=args.eval_every)
        r.update(dataset=name, noise=noise, method=method, seed=seed)
        results.append(r)
        print(f"[{k + 1}/{len(runs)} {time.perf_counter() - t0:6.0f}s] {name} noise {noise:.0%} {method:10s} "
              f"seed {seed}: test {r['test_final']:.1f} (best {r['test_best']:.1f}), "
              f"train-on-given-labels {r['train_on_given_labels']:.1f}", flush=True)
    return {"results": results, "epochs": {d: args.epochs[d] for d in datasets}, "seeds": args.seeds,
            "noise": args.noise, "datasets": list(datasets), "eval_every": args.eval_every,
            "threads": torch.get_num_threads(),
            "seconds": time.perf_counter() - t0, "torch": torch.__version__}


def summarise(report):
    rows = {}
    for r in report["results"]:
        rows.setdefault((r["dataset"], r["noise"], r["method"]), []).append(r)
    lines = ["| dataset | corrupted labels | method | test acc, final | test acc, best | train acc on given labels |",
             "|---|---:|---|---:|---:|---:|"]
    for (d, noise, m), rs in rows.items():
        cells = []
        for key in ("test_final", "test_best", "train_on_given_labels"):
            vals = [r[key] for r in rs]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):.1f} ± {sd:.1f}")
        lines.append(f"| {d} | {noise:.0%} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


COLOURS = {"ERM": "#c62828", "mixup α=1": "#2e7d32", "mixup α=8": "#1565c0"}


def curves(report):
    """Mean over seeds, per (dataset, noise, method): [(epoch, test acc)], [(epoch, acc on the given labels)]."""
    runs = {}
    for r in report["results"]:
        runs.setdefault((r["dataset"], r["noise"], r["method"]), []).append(r["history"])
    out = {}
    for key, histories in runs.items():
        test, given = [], []
        for h in zip(*histories):  # the same epochs in every seed's history
            test.append((h[0]["epoch"], statistics.mean(e["test"] for e in h)))
            if h[0]["train_on_given_labels"] is not None:
                given.append((h[0]["epoch"], statistics.mean(e["train_on_given_labels"] for e in h)))
        out[key] = (test, given)
    return out


def plot(report, path):
    """One panel per (dataset, noise level): test accuracy (solid) and accuracy on the given, possibly corrupted,
    training labels (dotted, circles) over epochs, ERM vs mixup; means over seeds (matplotlib, the ``paper``
    extra)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    lines = curves(report)
    panels = sorted({(d, n) for d, n, _ in lines})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), sharey=True, squeeze=False)
    for ax, (name, noise) in zip(axes[0], panels):
        for method, colour in COLOURS.items():
            test, given = lines.get((name, noise, method), ([], []))
            if test:
                ax.plot(*zip(*test), color=colour, linewidth=2, label=f"{method}: test")
            if given:
                ax.plot(*zip(*given), color=colour, linewidth=1, linestyle=":", marker="o", markersize=3,
                        label=f"{method}: given training labels")
        ax.set_title(f"{name}, {noise:.0%} of training labels corrupted", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="both datasets and 5 seeds (60 epochs each)")
    p.add_argument("--seeds", type=int, default=None, help="default 3 (5 with --full)")
    p.add_argument("--datasets", nargs="+", default=None, choices=["digits", "shapes"],
                   help="default digits (digits and shapes with --full)")
    p.add_argument("--noise", nargs="+", type=float, default=[0.0, 0.4, 0.8])
    p.add_argument("--max-steps", type=int, default=None, help="stop each run after this many steps (tests)")
    p.add_argument("--epochs-digits", type=int, default=60)
    p.add_argument("--epochs-shapes", type=int, default=60)
    p.add_argument("--eval-every", type=int, default=5, help="epochs between measures of the given-label accuracy")
    p.add_argument("--work", default="/tmp/dali-mixup-paper", help="data files and lists")
    p.add_argument("--out", default=None, help="write OUT.json, OUT.md and OUT.png")
    p.add_argument("--combine", nargs="+", default=None, metavar="JSON",
                   help="no training: combine the reports of runs split over processes (e.g. one per --noise level) "
                        "into one report, table and plot at --out")
    args = p.parse_args(argv)
    if args.combine:
        return write_report(combine(args.combine), args.out, args.full)
    args.seeds = args.seeds or (5 if args.full else 3)
    args.datasets = args.datasets or (["digits", "shapes"] if args.full else ["digits"])
    args.epochs = {"digits": args.epochs_digits, "shapes": args.epochs_shapes}
    return write_report(run(args), args.out, args.full)


def combine(paths):
    """One report from reports of the same settings run in parts (their results joined, their times added)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    first = parts[0]
    for p, part in zip(paths, parts):
        for key in ("epochs", "seeds", "eval_every", "threads"):
            if part.get(key) != first.get(key):
                raise ValueError(f"{p}: {key}={part.get(key)!r} differs from {paths[0]}'s {first.get(key)!r}")
    report = dict(first, results=[r for part in parts for r in part["results"]],
                  seconds=sum(part["seconds"] for part in parts), parts=len(parts),
                  noise=sorted({n for part in parts for n in part["noise"]}),
                  datasets=sorted({d for part in parts for d in part["datasets"]}))
    return report


def write_report(report, out, full=False):
    text = summarise(report)
    command = "python benchmarks/paper/mixup_vs_erm.py" + (" --full" if full else "")
    parts = f" split over {report['parts']} processes (--noise each; --combine)" if report.get("parts", 1) > 1 else ""
    header = (f"Mixup vs ERM, {report['seeds']} seeds (mean ± sd), datasets {report['datasets']}, epochs "
              f"{report['epochs']}, {report['threads']} torch thread(s) per process, {report['seconds'] / 60:.1f} "
              f"min of runs{parts} (command: {command}).\n\n")
    print(header + text)
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(header + text + "\n" + PAPER + "\n")
        plot(report, out.with_suffix(".png"))
    return report

if __name__ == "__main__":
    main()
    sys.exit(0)
