import os

import numpy as np
import pytest

# The simulator suite runs in its own process (tests/test_cuda_simulator.py); never collect it here.
if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    collect_ignore = ["cudasim"]


def _cuda_available() -> bool:
    # Ask torch, not numba: the simulator makes numba report a GPU.
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def make_batch():
    """make_batch(n, h, w, seed) -> random uint8 (n, h, w, 3) NHWC NumPy batch."""

    def make(n, h, w, seed=0):
        return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)

    return make


@pytest.fixture
def take():
    """take(loader, count) -> the first ``count`` (images, targets) of an epoch, cloned; exactly ``count`` (so
    comparisons over them are never vacuous)."""

    def first(loader, count):
        out = []
        for images, targets in loader:
            out.append((images.clone(), targets.clone()))
            if len(out) == count:
                break
        assert len(out) == count, f"the loader gave {len(out)} batch(es), {count} asked for"
        return out

    return first


def _clone(batch):
    """A batch's tensors cloned, whatever it nests (images, targets, CompactTargets, a MixRecord)."""
    import torch
    if isinstance(batch, torch.Tensor):
        return batch.clone()
    return tuple(_clone(part) for part in batch)


def flat(batch):
    """Every tensor of a (cloned) batch, in order."""
    import torch
    return [batch] if isinstance(batch, torch.Tensor) else [t for part in batch for t in flat(part)]


@pytest.fixture
def resume():
    """resume(make, skip=1) -> (loader, rest, resumed, again): ``skip`` batches of an epoch, a ``state_dict``
    there, the rest of that epoch; a second loader from ``make()`` restored from the state, and what it gives (all
    cloned). Both loaders stay usable (to go on into the next epoch)."""

    def run(make, skip=1):
        loader = make()
        it = iter(loader)
        for _ in range(skip):
            next(it)
        state = loader.state_dict()
        rest = [_clone(batch) for batch in it]
        resumed = make()
        resumed.load_state_dict(state)
        again = [_clone(batch) for batch in resumed]
        assert len(rest) == len(again) == len(loader) - skip > 0  # never a vacuous comparison
        return loader, rest, resumed, again

    return run


def _write_jpeg(path, rng, size, mode="RGB", fmt="JPEG"):
    from PIL import Image
    w, h = size
    base = rng.integers(0, 256, 3)
    arr = np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """ImageFolder: 3 classes x 7 RGB JPEGs (40-90 px, varied aspect) + a grayscale JPEG, a CMYK JPEG, a PNG,
    a 6x5 image (smaller than any crop) and a non-image file; 25 images in all."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for c, name in enumerate(["apple", "banana", "cherry"]):
        (root / name).mkdir()
        for i in range(7):
            _write_jpeg(root / name / f"{i}.jpg", rng, tuple(int(v) for v in rng.integers(40, 91, 2)))
    _write_jpeg(root / "apple" / "gray.jpg", rng, (50, 40), mode="L")
    _write_jpeg(root / "banana" / "cmyk.jpg", rng, (45, 60), mode="CMYK")
    _write_jpeg(root / "cherry" / "photo.png", rng, (64, 48), fmt="PNG")
    _write_jpeg(root / "cherry" / "tiny.jpg", rng, (6, 5))
    (root / "cherry" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="session")
def indexed_list(tmp_path_factory):
    """File list of 23 JPEGs whose label is the sample's index (num_classes=23): targets name the sample."""
    root = tmp_path_factory.mktemp("indexed")
    rng = np.random.default_rng(1)
    lines = []
    for i in range(23):
        _write_jpeg(root / f"img{i:02d}.jpg", rng, (48, 40))
        lines.append(f"img{i:02d}.jpg {i}")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    return root / "list.txt"
