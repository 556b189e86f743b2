"""Command line: ``dali-mixup`` (also ``python -m dali_mixup``).

Subcommands:
  make-sample-data DIR   write the built-in sample dataset (generated JPEGs, ImageFolder layout)
  bench                  loader throughput: ours vs plain DALI, DALI's own ops, DALI + timm, DataLoader + timm
  demo                   one mixed batch from the DALI loader: its soft targets and a picture
  train                  train a model on the loader (torchrun --nproc_per_node N -m dali_mixup train ...)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional


def _cmd_make_sample_data(args) -> int:
    from .sample_data import make_sample_data
    root = make_sample_data(args.dir, train_per_class=args.train_per_class, val_per_class=args.val_per_class,
                            seed=args.seed)
    count = sum(1 for _ in root.rglob("*.jpg"))
    print(f"wrote {count} JPEGs to {root} (train/ and val/, one folder per class)")
    return 0


def _cmd_demo(args) -> int:
    import numpy as np
    import torch

    import dali_mixup as dm
    from .loader import create_dali_loader
    from .sample_data import ensure_sample_data

    if args.data is None:
        root = ensure_sample_data() / "train"
        print(f"using the built-in sample dataset in {root.parent}")
    else:
        root = Path(args.data)
    num_classes = args.num_classes
    if num_classes is None:
        num_classes = sum(1 for p in root.iterdir() if p.is_dir()) if root.is_dir() else 0
        if num_classes < 1:
            raise SystemExit(f"error: --data {root}: give --num-classes (no class sub-folders to count)")
    cfg = dm.MixupConfig(num_classes, mixup_alpha=args.mixup_alpha, cutmix_alpha=args.cutmix_alpha,
                         mode=args.mode, label_smoothing=args.label_smoothing)
    loader = create_dali_loader(root, batch_size=args.batch_size, num_classes=num_classes,
                                image_size=args.image_size, mixup=cfg, device=args.device, seed=args.seed,
                                num_threads=args.threads)
    images, targets = next(iter(loader))
    n, size = len(images), args.image_size
    classes = loader.dataset.classes or [str(c) for c in range(num_classes)]
    print(f"first batch: images {tuple(images.shape)} {images.dtype} on {images.device}, "
          f"targets {tuple(targets.shape)} {targets.dtype}; {len(loader)} batches per epoch")
    params = dm.sample_params(cfg, n, size, size, seed=args.seed, epoch=0, step=0, rank=loader.shard_id)
    for i in range(min(4, n)):
        top = torch.topk(targets[i], k=min(2, num_classes))
        parts = ", ".join(f"{classes[c]} {w:.2f}" for w, c in zip(top.values.tolist(), top.indices.tolist()))
        kind = "cutmix" if params.use_cutmix[i] else ("mixup" if params.lam[i] < 1 else "none")
        print(f"  sample {i}: {kind:6s} lam={params.lam[i]:.3f} target: {parts}")
    if args.save:
        from PIL import Image
        mean = torch.tensor(dm.IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1) * 255
        std = torch.tensor(dm.IMAGENET_STD, device=images.device).view(1, 3, 1, 1) * 255
        pic = (images.float() * std + mean).clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()
        cols = min(8, n)
        rows = (n + cols - 1) // cols
        grid = np.zeros((rows * size, cols * size, 3), np.uint8)
        for i in range(n):
            grid[(i // cols) * size:(i // cols + 1) * size, (i % cols) * size:(i % cols + 1) * size] = pic[i]
        Image.fromarray(grid).save(args.save)
        print(f"saved the mixed batch to {args.save}")
    return 0


def _cmd_bench(args) -> int:
    from . import bench
    unknown = set(args.configs) - set(bench.CONFIGS)
    if unknown:
        raise SystemExit(f"error: --configs: unknown {sorted(unknown)}; choose from {', '.join(bench.CONFIGS)}")
    return bench.main(args)


def _cmd_train(args) -> int:
    from . import train
    train.run(args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dali-mixup", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-sample-data", help="write the built-in sample dataset (generated JPEGs)")
    p.add_argument("dir", help="output directory (train/ and val/ are created inside)")
    p.add_argument("--train-per-class", type=int, default=48)
    p.add_argument("--val-per-class", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_make_sample_data)

    p = sub.add_parser("demo", help="one mixed batch from the DALI loader: its soft targets and a picture")
    p.add_argument("--data", help="ImageFolder; default: the built-in sample dataset")
    p.add_argument("--num-classes", type=int, help="default: the number of class folders")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2, help="DALI threads")
    p.add_argument("--mixup-alpha", type=float, default=0.8)
    p.add_argument("--cutmix-alpha", type=float, default=1.0)
    p.add_argument("--mode", default="elem", choices=["batch", "pair", "elem"])
    p.add_argument("--label-smoothing", type=float, default=0.1)
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

    from .train import add_arguments
    p = sub.add_parser("train", help="train an ImageNet model on the loader (torchrun for many GPUs)")
    add_arguments(p)
    p.set_defaults(func=_cmd_train)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("batch_size", "image_size", "rounds", "train_per_class", "threads", "batches", "epochs"):
        if getattr(args, name, 1) is not None and getattr(args, name, 1) < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be >= 1")
    try:
        return args.func(args)
    except ValueError as exc:  # configuration errors name their field; show them without a traceback
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    sys.exit(main())
