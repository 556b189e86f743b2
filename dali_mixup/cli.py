"""Command line: ``dali-mixup`` (also ``python -m dali_mixup``).

Subcommands:
  make-sample-data DIR   write the built-in sample dataset (generated JPEGs, ImageFolder layout)
  demo                   decode real JPEGs, mix a batch with the fused kernel (GPU if present, else CPU),
                         time it against the two-pass way, and save a picture of the mixed batch
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _cmd_make_sample_data(args) -> int:
    from .sample_data import make_sample_data
    root = make_sample_data(args.dir, train_per_class=args.train_per_class, val_per_class=args.val_per_class,
                            seed=args.seed)
    count = sum(1 for _ in root.rglob("*.jpg"))
    print(f"wrote {count} JPEGs to {root} (train/ and val/, one folder per class)")
    return 0


def _list_images(root: Path, limit: int) -> List[Path]:
    if not root.exists():
        raise SystemExit(f"error: --data {root}: no such directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise SystemExit(f"error: --data {root}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    return files[:limit]


def _load_batch(files, size):
    """Decode, resize the shorter side to size / 0.875 and centre-crop: uint8 (B, size, size, 3)."""
    import numpy as np
    from PIL import Image
    out = np.empty((len(files), size, size, 3), np.uint8)
    for i, path in enumerate(files):
        try:
            img = Image.open(path).convert("RGB")
        except OSError as exc:
            raise SystemExit(f"error: cannot decode {path}: {exc}") from exc
        scale = (size / 0.875) / min(img.size)
        img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))),
                         Image.BILINEAR)
        left, top = (img.width - size) // 2, (img.height - size) // 2
        out[i] = np.asarray(img.crop((left, top, left + size, top + size)))
    return out


def _timed(fn, device, rounds):
    import torch
    times = []
    for _ in range(rounds):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def _cmd_demo(args) -> int:
    import numpy as np
    import torch

    import dali_mixup as dm
    from .sample_data import CLASSES, ensure_sample_data

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit("error: --device cuda: torch sees no CUDA device")
    if args.data is None:
        root = ensure_sample_data() / "train"
        print(f"using the built-in sample dataset in {root.parent}")
    else:
        root = Path(args.data)
    files = _list_images(root, limit=10**9)
    rng = np.random.default_rng(args.seed)
    files = [files[i] for i in rng.choice(len(files), size=min(args.batch_size, len(files)), replace=False)]
    class_names = sorted({p.parent.name for p in files} | (set(CLASSES) if args.data is None else set()))
    labels = torch.tensor([class_names.index(p.parent.name) for p in files])
    images = torch.from_numpy(_load_batch(files, args.image_size)).to(device)
    labels = labels.to(device)
    n = len(files)
    cfg = dm.MixupConfig(len(class_names), mixup_alpha=args.mixup_alpha, cutmix_alpha=args.cutmix_alpha,
                         mode=args.mode, label_smoothing=args.label_smoothing)
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[args.dtype]
    print(f"device {device}, batch {n} x {args.image_size}x{args.image_size}, {len(class_names)} classes, "
          f"mode {args.mode}, mixup_alpha {args.mixup_alpha}, cutmix_alpha {args.cutmix_alpha}, out {args.dtype}")

    params = dm.sample_params(cfg, n, args.image_size, args.image_size, seed=args.seed)
    flip = torch.from_numpy(rng.random(n) < 0.5)
    out, targets = dm.mix_batch(images, labels, cfg, params, out_dtype=dtype, flip=flip, check_labels=False)

    mean = torch.tensor(dm.IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(dm.IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255
    lam = torch.from_numpy(params.lam).to(device).view(-1, 1, 1, 1)
    partner = torch.from_numpy(params.partner).to(device)

    def two_pass():  # what a DataLoader + timm user does: normalise the batch, then mix it (mixup path)
        x = images.permute(0, 3, 1, 2).float().sub_(mean).div_(std)
        x = x.mul(lam).add_(x[partner].mul_(1 - lam))
        return x.to(dtype)

    fused_s = _timed(lambda: dm.mix_batch(images, labels, cfg, params, out_dtype=dtype, check_labels=False),
                     device, args.rounds)
    two_pass_s = _timed(two_pass, device, args.rounds)
    print(f"fused kernel (mix + normalise + cast + layout + targets): {fused_s * 1e3:8.2f} ms/batch "
          f"= {n / fused_s:10.0f} img/s")
    print(f"two-pass torch (normalise, then mix):                     {two_pass_s * 1e3:8.2f} ms/batch "
          f"= {n / two_pass_s:10.0f} img/s   (fused is {two_pass_s / fused_s:.2f}x)")
    for i in range(min(4, n)):
        top = torch.topk(targets[i], k=min(2, targets.shape[1]))
        parts = ", ".join(f"{class_names[c]} {w:.2f}" for w, c in zip(top.values.tolist(), top.indices.tolist()))
        kind = "cutmix" if params.use_cutmix[i] else ("mixup" if params.lam[i] < 1 else "none")
        print(f"  sample {i}: {kind:6s} lam={params.lam[i]:.3f} target: {parts}")
    if args.save:
        from PIL import Image
        pic = (out.float() * std + mean).clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()
        cols = min(8, n)
        rows = (n + cols - 1) // cols
        s = args.image_size
        grid = np.zeros((rows * s, cols * s, 3), np.uint8)
        for i in range(n):
            grid[(i // cols) * s:(i // cols + 1) * s, (i % cols) * s:(i % cols + 1) * s] = pic[i]
        Image.fromarray(grid).save(args.save)
        print(f"saved the mixed batch to {args.save}")
    return 0


def _cmd_bench(args) -> int:
    from . import bench
    unknown = set(args.configs) - set(bench.CONFIGS)
    if unknown:
        raise SystemExit(f"error: --configs: unknown {sorted(unknown)}; choose from {', '.join(bench.CONFIGS)}")
    return bench.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dali-mixup", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-sample-data", help="write the built-in sample dataset (generated JPEGs)")
    p.add_argument("dir", help="output directory (train/ and val/ are created inside)")
    p.add_argument("--train-per-class", type=int, default=48)
    p.add_argument("--val-per-class", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_make_sample_data)

    p = sub.add_parser("demo", help="mix a batch of real JPEGs with the fused kernel and time it")
    p.add_argument("--data", help="folder of images (class sub-folders); default: the built-in sample dataset")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--mixup-alpha", type=float, default=0.8)
    p.add_argument("--cutmix-alpha", type=float, default=1.0)
    p.add_argument("--mode", default="elem", choices=["batch", "pair", "elem"])
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--dtype", default="float16", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default="mixed-batch.png", help="PNG of the mixed batch ('' to skip)")
    p.set_defaults(func=_cmd_demo)
    p = sub.add_parser("bench", help="loader throughput: ours vs plain DALI, DALI ops, DALI+timm, DataLoader+timm")
    p.add_argument("--data", help="ImageFolder (training split); default: the built-in sample dataset")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2, help="DALI threads")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    p.add_argument("--rounds", type=int, default=5, help="measured rounds (after one warm-up round)")
    p.add_argument("--batches", type=int, default=6, help="batches per configuration per round")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--configs", nargs="+", default=["fused", "dali-nomix", "dali-ops", "dali+timm", "torch+timm"])
    p.add_argument("--json", help="write results to this JSON file (and .md, .png beside it)")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("batch_size", "image_size", "rounds", "train_per_class", "threads", "batches"):
        if getattr(args, name, 1) is not None and getattr(args, name, 1) < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be >= 1")
    try:
        return args.func(args)
    except ValueError as exc:  # configuration errors name their field; show them without a traceback
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    sys.exit(main())
