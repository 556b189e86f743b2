"""``dali-mixup demo``: one mixed batch from the DALI loader, sample by sample (its own class and its partner's,
with their weights), and a picture of the batch with each tile labelled the same way."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["run", "sample_classes", "save_picture"]

_TOLERANCE = 1e-4  # weights below this are absent (float32 targets)


def sample_classes(row: np.ndarray, lam: float, off: float, on: float) -> Tuple[Optional[int], Optional[int]]:
    """in: one soft-target row (C,), the sample's λ, the smoothing values ``off``/``on`` -> out: (own class,
    partner's class). The row is λ·s(own) + (1 − λ)·s(partner); a class with weight 0 cannot be read back and is
    None (the partner of an unmixed sample, the own class of a sample pasted over whole)."""
    weights = (np.asarray(row, np.float64) - off) / (on - off)
    present = [int(c) for c in np.flatnonzero(weights > _TOLERANCE)]
    own_counts, partner_counts = lam > _TOLERANCE, 1.0 - lam > _TOLERANCE
    if len(present) == 2:
        a, b = present
        own = a if abs(weights[a] - lam) <= abs(weights[b] - lam) else b
        return own, b if own == a else a
    only = present[0] if present else None
    if own_counts and partner_counts:
        return only, only  # a same-class pair
    return (only, None) if own_counts else (None, only)


def _caption(classes: Sequence[str], own, partner, lam: float) -> List[str]:
    name = (lambda c: "?" if c is None else classes[c])
    if lam >= 1.0:
        return [f"{name(own)} 1.00"]
    return [f"{name(own)} {lam:.2f}", f"+ {name(partner)} {1.0 - lam:.2f}"]


def save_picture(pixels: np.ndarray, captions: Sequence[Sequence[str]], path, cols: int = 8) -> None:
    """in: uint8 (B, H, W, 3) images, one caption (lines) per image, a PNG path -> out: the grid written, each
    tile's caption on a dark strip at its top."""
    from PIL import Image, ImageDraw, ImageFont
    n, h, w, _ = pixels.shape
    cols = min(cols, n)
    rows = -(-n // cols)
    grid = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i in range(n):
        grid[(i // cols) * h:(i // cols + 1) * h, (i % cols) * w:(i % cols + 1) * w] = pixels[i]
    img = Image.fromarray(grid)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    line = 12
    for i, lines in enumerate(captions):
        x, y = (i % cols) * w, (i // cols) * h
        draw.rectangle([x, y, x + w - 1, y + min(h, line * len(lines) + 2) - 1], fill=(0, 0, 0))
        for k, text in enumerate(lines):
            draw.text((x + 2, y + 1 + k * line), text, fill=(255, 255, 255), font=font)
    img.save(path)


def _pixels(images, mean, std) -> np.ndarray:
    """in: normalised float (B, 3, H, W) torch tensor -> out: uint8 (B, H, W, 3) NumPy."""
    import torch
    m = torch.tensor(mean, device=images.device).view(1, 3, 1, 1) * 255
    s = torch.tensor(std, device=images.device).view(1, 3, 1, 1) * 255
    return (images.float() * s + m).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()


def _save_new(save, path: Path) -> None:
    """Write ``path`` with ``save(path)``, creating its missing folders now (the batch is ready); a save that
    fails removes the folders it created, so a failed demo leaves nothing behind."""
    missing = []
    folder = path.parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save(path)
    except BaseException:
        for folder in missing:  # innermost first; only the empty ones we made
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def run(args) -> int:
    """in: the parsed ``demo`` flags -> out: exit status 0; prints the batch and saves its picture."""
    import dali_mixup as dm
    from .. import loader as _loader
    from .args import count_classes, find_splits, mixup_config

    train_dir, _ = find_splits(args.data, None)
    if args.data is None:
        print(f"using the built-in sample dataset in {train_dir.parent}")
    num_classes = args.num_classes or count_classes(train_dir)
    cfg = mixup_config(args, num_classes)
    loader = _loader.create_dali_loader(train_dir, batch_size=args.batch_size, num_classes=num_classes,
                                        image_size=args.image_size, mixup=cfg, device=args.device, seed=args.seed,
                                        num_threads=args.threads, skip_corrupt=args.skip_corrupt,
                                        **getattr(args, "train_loader_options", {}))
    images, targets = next(iter(loader))
    print(f"first batch: images {tuple(images.shape)} {images.dtype} on {images.device}, "
          f"targets {tuple(targets.shape)} {targets.dtype}; {len(loader)} batches per epoch")
    n, size = len(images), args.image_size
    drawn = cfg if cfg is not None else dm.MixupConfig(num_classes, mixup_alpha=0.0)
    params = dm.sample_params(drawn, n, size, size, seed=args.seed, epoch=0, step=0, rank=loader.shard_id)
    classes = loader.dataset.classes or [str(c) for c in range(num_classes)]
    off, on = drawn.off_on
    rows = targets.float().cpu().numpy()
    captions = []
    for i in range(n):
        lam = float(params.lam[i])
        own, partner = sample_classes(rows[i], lam, off, on)
        kind = "cutmix" if params.use_cutmix[i] and lam < 1 else ("mixup" if lam < 1 else "none")
        captions.append(_caption(classes, own, partner, lam))
        where = f"  (partner: sample {int(params.partner[i])})" if lam < 1 else ""
        print(f"  sample {i:3d}: {kind:6s} {' '.join(captions[-1])}{where}")
    if args.save:
        _save_new(lambda path: save_picture(_pixels(images, loader.mean, loader.std), captions, path), Path(args.save))
        print(f"saved the mixed batch to {args.save} (tiles in sample order, 8 per row, labelled as above)")
    return 0
