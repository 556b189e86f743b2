"""Images an attacker, or a careless shared folder, can put in a dataset: decompression bombs, formats DALI does not
decode under image extensions, files truncated while the loader reads them. Each is refused by name at the scan,
or skipped and counted with skip_corrupt; none crashes the process. CPU-only DALI, files the tests write."""

import io
import logging
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dali_mixup.loader import create_dali_loader

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(num_classes=2, image_size=8, num_threads=1, device="cpu", batch_size=2, train=False)


def _encoded(fmt, size=(16, 12), **kw):
    buf = io.BytesIO()
    arr = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


JPEG = _encoded("JPEG")


def jpeg_bomb(width=30000, height=30000):
    """A tiny JPEG whose frame header declares width x height (the attacker's 693-byte file)."""
    data = bytearray(JPEG)
    i = 2
    while True:
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            data[i + 5:i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length


def png(width, height):
    """A valid RGB PNG of width x height black pixels, compressed to almost nothing."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    rows = zlib.compress(b"".join(b"\0" + bytes(3 * width) for _ in range(height)), 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def _folder(root, planted):
    """ImageFolder a/, b/ of 3 good JPEGs each, plus ``planted`` {relative name: bytes}."""
    for c in "ab":
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            (root / c / f"{i}.jpg").write_bytes(JPEG)
    for name, data in planted.items():
        (root / name).write_bytes(data)
    return root


def _in_subprocess(code):
    """Run ``code`` in a fresh interpreter: a crash (SIGSEGV, SIGBUS) is a return code, not a lost test run."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)


# -- decompression bombs -------------------------------------------------------------------------------------------
BOMBS = {
    "jpeg 30000x30000": ("a/bomb.jpg", jpeg_bomb(), "30000 x 30000 = 900,000,000 pixels"),
    "png 1x200000": ("b/strip.png", png(1, 200000), "aspect ratio 200,000:1"),
    "png 200000x1": ("b/wide.png", png(200000, 1), "aspect ratio 200,000:1"),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_decompression_bomb_is_refused_by_name_before_decoding(tmp_path, name):
    rel, data, detail = BOMBS[name]
    assert len(data) < 1500  # the attacker's file is tiny
    root = _folder(tmp_path / "data", {rel: data})
    with pytest.raises(ValueError, match=rf"{rel} \(.*\): image file too large to decode safely") as info:
        create_dali_loader(root, **SMALL)
    assert detail in str(info.value)


def test_decompression_bombs_are_skipped_and_counted_with_skip_corrupt(tmp_path, caplog):
    root = _folder(tmp_path / "data", {rel: data for rel, data, _ in BOMBS.values()})
    with caplog.at_level(logging.WARNING, logger="dali_mixup"):
        loader = create_dali_loader(root, skip_corrupt=True, **SMALL)
    assert loader.dataset.skipped == 3 and len(loader.dataset) == 6
    assert sum(len(images) for images, _ in loader) == 6
    assert "skipped 3 image(s)" in caplog.text and "bomb.jpg" in caplog.text


def test_pixel_and_aspect_limits_are_settings(tmp_path, monkeypatch):
    from dali_mixup import image_headers  # (imported here: the tests of behaviour run without it)
    big = tmp_path / "big.png"
    big.write_bytes(png(3000, 20))
    assert image_headers.header_problem(str(big))[0] == "too_large"  # 150:1
    monkeypatch.setattr(image_headers, "MAX_ASPECT_RATIO", None)
    assert image_headers.header_problem(str(big)) is None
    monkeypatch.setattr(image_headers, "MAX_IMAGE_PIXELS", 59_999)
    assert "60,000 pixels, over the limit of 59,999" in image_headers.header_problem(str(big))[1]
    monkeypatch.setattr(image_headers, "MAX_IMAGE_PIXELS", None)
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(jpeg_bomb())
    assert image_headers.header_problem(str(bomb)) is None  # both off: the user's choice
    assert image_headers.MAX_IMAGE_PIXELS is None and Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's untouched


def test_jpeg_size_from_the_header_agrees_with_pillow():
    from dali_mixup import image_headers  # (imported here: the tests of behaviour run without it)
    rng = np.random.default_rng(1)
    for i in range(24):
        w, h = (int(v) for v in rng.integers(1, 600, 2))
        arr = np.broadcast_to((np.arange(w) * 255 // w).astype(np.uint8)[None, :, None], (h, w, 3))
        kw = dict(progressive=bool(i % 2), quality=int(rng.integers(20, 95)))
        if i % 6 == 0:  # (baseline only: Pillow's progressive encoder fails with a large APP1)
            kw["exif"] = Image.Exif().tobytes() + b"x" * 3000  # a large APP1 segment before the frame header
        img = Image.fromarray(arr).convert("L" if i % 4 == 0 else "RGB")
        buf = io.BytesIO()
        img.save(buf, "JPEG", **kw)
        buf.seek(0)
        assert image_headers._jpeg_size(buf) == (w, h)


# -- formats DALI does not decode ----------------------------------------------------------------------------------
def _other_formats():
    found = {"GIF": _encoded("GIF"), "ICO": _encoded("ICO"), "TGA": _encoded("TGA"), "PCX": _encoded("PCX"),
             "text": b"this is not an image at all", "PNG 1000001 wide": png(1_000_001, 1),
             "WebP extended": b"RIFF\x1a\x00\x00\x00WEBPVP8X" + bytes(18)}
    try:
        found["AVIF"] = _encoded("AVIF")
    except (KeyError, OSError, ValueError):  # a Pillow without libavif: an AVIF's first bytes, as a camera writes
        found["AVIF"] = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(64)
    return found


OTHER = _other_formats()


@pytest.mark.parametrize("fmt", list(OTHER))
def test_a_format_dali_does_not_decode_is_named_at_the_scan(tmp_path, fmt):
    root = _folder(tmp_path / "data", {"b/photo.jpg": OTHER[fmt]})
    with pytest.raises(ValueError, match=r"b/photo.jpg \(.*\): image file not in a format DALI decodes") as info:
        create_dali_loader(root, **SMALL)
    if fmt in ("GIF", "ICO", "AVIF"):
        assert f"({fmt};" in str(info.value)


def test_formats_dali_does_not_decode_are_skipped_with_skip_corrupt_and_iteration_never_crashes(tmp_path):
    planted = {f"{'ab'[i % 2]}/odd{i}.jpg": data for i, data in enumerate(OTHER.values())}
    root = _folder(tmp_path / "data", planted)
    proc = _in_subprocess(f"""
        from dali_mixup.loader import create_dali_loader
        loader = create_dali_loader({str(root)!r}, skip_corrupt=True, **{SMALL!r})
        print("skipped", loader.dataset.skipped, "kept", len(loader.dataset))
        print("seen", sum(len(images) for images, _ in loader))
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"skipped {len(OTHER)} kept 6" in proc.stdout and "seen 6" in proc.stdout


def test_every_format_dali_decodes_passes_the_scan_and_decodes(tmp_path):
    from dali_mixup import image_headers  # (imported here: the tests of behaviour run without it)
    formats = {"jpg": "JPEG", "png": "PNG", "bmp": "BMP", "tif": "TIFF", "webp": "WEBP", "ppm": "PPM",
               "pgm": "PPM"}
    planted = {}
    for ext, fmt in formats.items():
        data = _encoded(fmt) if ext != "pgm" else _gray("PPM")
        planted[f"a/x.{ext}"] = data
        planted[f"b/as-jpg-{ext}.jpg"] = data  # DALI goes by the content, so does the scan
    root = _folder(tmp_path / "data", planted)
    for path in sorted(root.rglob("*")):
        if path.is_file():
            assert image_headers.header_problem(str(path)) is None, path
    loader = create_dali_loader(root, **SMALL)
    assert sum(len(images) for images, _ in loader) == 6 + 2 * len(formats)


def _gray(fmt):
    buf = io.BytesIO()
    Image.new("L", (16, 12), 90).save(buf, fmt)
    return buf.getvalue()


def test_the_header_check_reads_no_pixels(tmp_path, monkeypatch):
    """The scan opens each file and reads its header only: never Pillow's decoder."""
    from dali_mixup import image_headers
    path = tmp_path / "x.png"
    path.write_bytes(_encoded("PNG", size=(400, 300)))
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("the header check decoded pixels"))
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("the header check used Image.open"))
    assert image_headers.header_problem(str(path)) is None


# -- files that change while the loader reads them -------------------------------------------------------------------
def test_images_emptied_in_place_while_the_loader_runs_never_crash_it(tmp_path):
    """DALI's file reader mapped each file into memory (mmap); a file truncated after it was mapped and before it
    was decoded killed the process with SIGBUS. Read without mapping, the loader finishes or names the file."""
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for c in "ab":
        (root / c).mkdir(parents=True)
        for i in range(48):
            arr = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.jpg", quality=90)
    proc = _in_subprocess(f"""
        import os
        from dali_mixup.loader import create_dali_loader
        loader = create_dali_loader({str(root)!r}, batch_size=8, num_classes=2, image_size=32, num_threads=2,
                                    device="cpu")
        batches = iter(loader)
        next(batches)
        for f in loader.dataset.files:
            os.truncate(f, 0)  # emptied in place (same inode): a sync tool, a user's '> file', a full disk
        try:
            print("batches after", sum(1 for _ in batches))
        except RuntimeError as exc:
            print("named:", exc)
    """)
    assert proc.returncode == 0, f"return code {proc.returncode} (-7: SIGBUS)\n{proc.stderr[-2000:]}"
    assert "batches after" in proc.stdout or ("named:" in proc.stdout and ".jpg" in proc.stdout)


def test_a_bomb_or_a_gif_inside_a_webdataset_shard_is_named_by_shard_and_key(tmp_path):
    import tarfile
    for name, data, said in [("bomb", jpeg_bomb(), "30000 x 30000"), ("gif", OTHER["GIF"], "GIF")]:
        shard = tmp_path / f"{name}.tar"
        with tarfile.open(shard, "w") as tar:
            for i, image in enumerate([JPEG, data, JPEG]):
                for ext, body in (("jpg", image), ("cls", b"1")):
                    info = tarfile.TarInfo(f"s{i:04d}.{ext}")
                    info.size = len(body)
                    tar.addfile(info, io.BytesIO(body))
        with pytest.raises(ValueError, match=rf"{name}.tar: 1 image\(s\) refused by their header") as info:
            create_dali_loader(str(shard), **SMALL)
        assert f"s0001 ({said}" in str(info.value)
