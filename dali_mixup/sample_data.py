"""The built-in sample dataset: a small, learnable ImageFolder of JPEGs at ImageNet-like sizes, generated
locally (no downloads).

Each class is a shape drawn in a class-specific colour family over a textured background, at a random size,
position and rotation; images are 300-500 px on a side with varied aspect ratios, so decode and random-resized
crop do ImageNet-like work.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["CLASSES", "make_sample_data", "default_sample_dir", "ensure_sample_data"]

CLASSES = ("circle", "square", "triangle", "cross", "ring", "stripes", "diamond", "star")
_HUES = np.linspace(0.0, 1.0, len(CLASSES), endpoint=False)


def _hsv_to_rgb(h, s, v):
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def _star(cx, cy, r, points=5):
    pts = []
    for k in range(2 * points):
        rad = r if k % 2 == 0 else r * 0.45
        a = math.pi * k / points - math.pi / 2
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def _draw_shape(draw, cls, cx, cy, r, color, width):
    if cls == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif cls == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif cls == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
    elif cls == "cross":
        draw.rectangle([cx - r, cy - r / 3, cx + r, cy + r / 3], fill=color)
        draw.rectangle([cx - r / 3, cy - r, cx + r / 3, cy + r], fill=color)
    elif cls == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=color, width=max(3, int(r / 3)))
    elif cls == "stripes":
        for k in range(-3, 4):
            x = cx + k * r / 3
            draw.line([(x, cy - r), (x, cy + r)], fill=color, width=max(2, width))
    elif cls == "diamond":
        draw.polygon([(cx, cy - r), (cx + r * 0.7, cy), (cx, cy + r), (cx - r * 0.7, cy)], fill=color)
    elif cls == "star":
        draw.polygon(_star(cx, cy, r), fill=color)


def _make_image(cls_index: int, rng: np.random.Generator) -> Image.Image:
    w, h = (int(v) for v in rng.integers(300, 501, size=2))
    cls = CLASSES[cls_index]
    base = rng.integers(40, 200, size=3)
    noise = np.clip(base + rng.normal(0, 18, size=(h // 8 + 1, w // 8 + 1, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(noise, "RGB").resize((w, h), Image.BILINEAR)  # smooth texture
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    hue = (_HUES[cls_index] + rng.normal(0, 0.03)) % 1.0
    color = _hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0)) + (255,)
    r = rng.uniform(0.2, 0.4) * min(w, h)
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    _draw_shape(draw, cls, cx, cy, r, color, int(r / 8))
    layer = layer.rotate(float(rng.uniform(-30, 30)), center=(cx, cy), resample=Image.BILINEAR)
    img.paste(layer, (0, 0), layer)
    return img


def make_sample_data(root: Union[str, os.PathLike], *, train_per_class: int = 48, val_per_class: int = 12,
                     num_classes: int = len(CLASSES), seed: int = 0, quality: int = 90) -> Path:
    """Write ``root/train/<class>/*.jpg`` and ``root/val/<class>/*.jpg``; returns ``root``.

    Deterministic for a given seed. ``num_classes`` <= 8 classes (shapes) are used.
    """
    if not 1 <= num_classes <= len(CLASSES):
        raise ValueError(f"num_classes must be in [1, {len(CLASSES)}], got {num_classes}")
    if train_per_class < 1 or val_per_class < 0:
        raise ValueError("train_per_class must be >= 1 and val_per_class >= 0")
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for k in range(num_classes):
            folder = root / split / CLASSES[k]
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                _make_image(k, rng).save(folder / f"{CLASSES[k]}_{i:04d}.jpg", quality=quality)
    (root / "README.txt").write_text(
        "dali-mixup sample dataset: generated shapes, one class per folder (ImageFolder layout).\n")
    return root


def default_sample_dir() -> Path:
    """Where the built-in sample dataset is kept: $DALI_MIXUP_DATA, else ~/.cache/dali-mixup/sample-data."""
    env = os.environ.get("DALI_MIXUP_DATA")
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "dali-mixup" / "sample-data"


def ensure_sample_data(root: Optional[Union[str, os.PathLike]] = None) -> Path:
    """The sample dataset at ``root`` (default: ``default_sample_dir()``), generated there if missing."""
    root = Path(root) if root is not None else default_sample_dir()
    if not (root / "README.txt").exists():
        make_sample_data(root)
    return root
