"""The built-in sample datasets, ImageFolders of JPEGs written locally (no downloads).

- shapes (``make_sample_data``): small and learnable; each class is a shape drawn in a class-specific colour
  family over a textured background, at a random size, position and rotation; 300-500 px on a side.
- photos (``make_photo_data``, for benchmarks): photo-like JPEGs of ImageNet's size distribution, so decoding
  costs what it costs on real data. Each class is one of the colour photographs scikit-image ships
  (``skimage.data``), cropped at random (50-100 % of its area), resized to a longer side of 400-500 px
  (aspect 1-1.5, a quarter portrait), flipped, jittered in brightness and colour, given mild sensor noise
  (σ = 4 levels) and saved at JPEG quality 85-95. Pixel counts (which decode, resize and crop scale with) are
  ImageNet's; files average about 50 KB, 0.3 bytes per pixel, against ImageNet's ~110 KB (~0.6 bytes per
  pixel), so entropy decoding is somewhat cheaper than on ImageNet.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["CLASSES", "PHOTOS", "make_sample_data", "make_photo_data", "default_sample_dir", "ensure_sample_data",
           "ensure_photo_data"]

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


# colour photographs shipped inside scikit-image's wheel (skimage.data loads them without a download)
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
          "motorcycle")


def _load_photos() -> dict:
    """in: nothing -> out: {name: uint8 (H, W, 3) RGB} for every name of PHOTOS, from scikit-image's wheel."""
    try:
        from skimage import data
    except ImportError as exc:
        raise ImportError("the photo sample data needs scikit-image: pip install 'dali-mixup[bench]'") from exc
    photos = {name: getattr(data, name)() for name in PHOTOS if name != "motorcycle"}
    photos["motorcycle"] = data.stereo_motorcycle()[0]
    return {name: np.ascontiguousarray(photos[name][..., :3]) for name in PHOTOS}


def _photo_size(rng: np.random.Generator):
    """(width, height) of one image: longer side 400-500 px, aspect 1-1.5, portrait one time in four."""
    long_side = int(rng.integers(400, 501))
    short_side = int(round(long_side / rng.uniform(1.0, 1.5)))
    return (short_side, long_side) if rng.random() < 0.25 else (long_side, short_side)


def _photo_like(photo: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """in: uint8 (H, W, 3) source photograph -> out: RGB PIL image, a random crop of it at an ImageNet-like
    size, flipped, jittered (brightness, per-channel gain) and with mild sensor noise."""
    w, h = _photo_size(rng)
    src_h, src_w = photo.shape[:2]
    area = rng.uniform(0.5, 1.0) * src_h * src_w
    crop_w = int(min(src_w, round(np.sqrt(area * w / h))))
    crop_h = int(min(src_h, round(crop_w * h / w)))
    y0, x0 = int(rng.integers(0, src_h - crop_h + 1)), int(rng.integers(0, src_w - crop_w + 1))
    img = Image.fromarray(photo[y0:y0 + crop_h, x0:x0 + crop_w]).resize((w, h), Image.BICUBIC)
    pixels = np.asarray(img, np.float32)
    if rng.random() < 0.5:
        pixels = pixels[:, ::-1]
    gain = rng.uniform(0.8, 1.2) * rng.uniform(0.9, 1.1, size=3)
    pixels = pixels * gain + rng.normal(0.0, 4.0, size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def make_photo_data(root: Union[str, os.PathLike], *, per_class: int = 160, seed: int = 0) -> Path:
    """Write ``root/train/<photo>/*.jpg``, ``per_class`` photo-like JPEGs for each of PHOTOS; returns ``root``.

    Deterministic for a given seed (and scikit-image's photographs). Needs scikit-image (the ``bench`` extra).
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be an int >= 1, got {per_class!r}")
    photos = _load_photos()
    root = Path(root)
    rng = np.random.default_rng(seed)
    for name, photo in photos.items():
        folder = root / "train" / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            quality = int(rng.integers(85, 96))
            _photo_like(photo, rng).save(folder / f"{name}_{i:04d}.jpg", quality=quality)
    (root / "README.txt").write_text(
        "dali-mixup photo sample data: random crops of scikit-image's photographs at ImageNet-like sizes, one "
        "class per photograph (ImageFolder layout), for benchmarks.\n")
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


def ensure_photo_data(root: Optional[Union[str, os.PathLike]] = None) -> Path:
    """The photo sample data at ``root`` (default: ``photos/`` in ``default_sample_dir()``), written if missing."""
    root = Path(root) if root is not None else default_sample_dir() / "photos"
    if not (root / "README.txt").exists():
        make_photo_data(root)
    return root
