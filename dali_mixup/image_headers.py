"""What an image file's header says, read before any pixel is decoded: whether DALI can decode its format, and
whether its size is safe to decode. ``datasets`` runs this on every image when it scans a dataset.

DALI's decoders (``fn.decoders.image``, nvImageCodec) take JPEG, JPEG 2000, TIFF, PNG, BMP, PNM (PBM, PGM, PPM)
and WebP in its simple format (lossy ``VP8 `` or lossless ``VP8L``, not the extended ``VP8X``). A file in another
format under an image extension (GIF, AVIF, ICO, TGA, PCX, ...) is opened by Pillow but fails in DALI without
its name, often by a crash, so it is refused here, by its name, from its first bytes (the magic number: a format
is recognised by what the file starts with, never by its extension). So is a PNG more than 1,000,000 pixels on
a side (libpng's limit, which DALI's PNG decoder keeps).

Decompression bombs: a 693-byte JPEG can declare 30000 x 30000 pixels (9-11 GB to decode). The width and height
are read from the header (JPEG's frame header, PNG's IHDR, WebP's VP8/VP8L header parsed here; the other
formats by Pillow's format plugins, which read the header only, without Pillow's own bomb check, so the limits
below decide) and refused above ``MAX_IMAGE_PIXELS`` pixels (Pillow's ``Image.MAX_IMAGE_PIXELS``,
89,478,485, by default) or above ``MAX_ASPECT_RATIO`` (100: a 1 x 200,000 PNG needed 4.1 GB in the pipeline).
Both are module settings, as Pillow's is: set one to None to turn that check off (the command line's
``--max-image-pixels`` / ``--max-aspect-ratio`` set them for a run).
"""

from __future__ import annotations

import struct
from typing import Optional, Tuple

from PIL import Image

__all__ = ["MAX_IMAGE_PIXELS", "MAX_ASPECT_RATIO", "PNG_MAX_SIDE", "DALI_FORMATS", "sniff_format", "header_problem",
           "stream_problem", "set_limits"]

#: Images with more pixels than this are refused (None: no limit). Pillow's default limit.
MAX_IMAGE_PIXELS: Optional[int] = Image.MAX_IMAGE_PIXELS
#: Images whose longer side is more than this many times the shorter are refused (None: no limit).
MAX_ASPECT_RATIO: Optional[float] = 100.0
#: libpng's default user limit on a PNG's width and height, kept by DALI's PNG decoder.
PNG_MAX_SIDE = 1_000_000
#: The formats DALI's image decoder reads (see the module docstring).
DALI_FORMATS = ("JPEG", "JPEG2000", "TIFF", "PNG", "BMP", "PNM", "WebP")
_HEAD = 64  # bytes read to recognise the format

# Formats DALI does not decode, recognised by their first bytes, so that the refusal names them.
_OTHERS = ((b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"\x00\x00\x01\x00", "ICO"),
           (b"8BPS", "PSD"), (b"qoif", "QOI"), (b"DDS ", "DDS"), (b"\x76\x2f\x31\x01", "OpenEXR"),
           (b"\xff\x0a", "JPEG XL"), (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"), (b"P7", "PAM"),
           (b"%PDF", "PDF"), (b"<svg", "SVG"), (b"<?xml", "XML/SVG"), (b"II\x2b\x00", "BigTIFF"),
           (b"MM\x00\x2b", "BigTIFF"))


def set_limits(max_pixels=None, max_aspect=None) -> None:
    """Set the limits from command-line values: a number (0: no limit), or None to leave that one as it is."""
    global MAX_IMAGE_PIXELS, MAX_ASPECT_RATIO
    if max_pixels is not None:
        MAX_IMAGE_PIXELS = int(max_pixels) or None
    if max_aspect is not None:
        MAX_ASPECT_RATIO = float(max_aspect) or None


def sniff_format(head: bytes) -> str:
    """in: a file's first bytes (64 are enough) -> out: its format, one of ``DALI_FORMATS``, or a name for another
    format ("GIF", "AVIF", "WebP (extended)", ...), or "unknown" (TGA and PCX have no magic number; text; junk)."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"BM") and len(head) >= 26:
        return "BMP"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or head.startswith(b"\xff\x4f\xff\x51"):
        return "JPEG2000"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3] in b" \t\r\n#":
        return "PNM"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        chunk = head[12:16]
        return "WebP" if chunk in (b"VP8 ", b"VP8L") else "WebP (extended)" if chunk == b"VP8X" else "unknown"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return {b"avif": "AVIF", b"avis": "AVIF", b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF"}.get(
            brand, "ISO media (" + brand.decode("latin-1") + ")")
    for magic, name in _OTHERS:
        if head.startswith(magic):
            return name
    return "unknown"


def _webp_size(head: bytes) -> Tuple[int, int]:
    """Width and height of a simple-format WebP from its first 30 bytes (RFC 9649)."""
    if head[12:16] == b"VP8 ":
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    bits = int.from_bytes(head[21:25], "little")  # VP8L: 14-bit width - 1, 14-bit height - 1
    return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1


_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (DHT, JPG, DAC are not)


def _jpeg_size(fh) -> Tuple[int, int]:
    """Width and height from a JPEG's start-of-frame segment, walking the marker segments before it (ITU T.81
    B.1.1; what Pillow's JPEG plugin reads, at a fifth of its cost)."""
    fh.seek(2)
    for _ in range(10_000):
        byte = fh.read(1)
        while byte == b"\xff":  # fill bytes before a marker
            byte = fh.read(1)
        if not byte:
            raise ValueError("ends before its frame header")
        marker = byte[0]
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length field
            continue
        if marker in (0xD9, 0xDA):
            raise ValueError("no frame header before the scan")
        raw = fh.read(2)
        if len(raw) < 2:
            raise ValueError("ends inside a marker segment")
        length = struct.unpack(">H", raw)[0]
        if length < 2:
            raise ValueError(f"marker segment {marker:#04x} of length {length}")
        if marker in _SOF:
            frame = fh.read(5)
            if len(frame) < 5:
                raise ValueError("ends inside its frame header")
            height, width = struct.unpack(">HH", frame[1:5])
            return width, height
        fh.seek(length - 2, 1)
        probe = fh.read(1)  # the next marker's 0xFF
        if probe != b"\xff":
            raise ValueError("marker segments out of step" if probe else "ends before its frame header")
    raise ValueError("too many marker segments before the frame header")


def _plugin(fmt: str):
    """The Pillow plugin class that reads ``fmt``'s header (constructed directly: no bomb check of Pillow's)."""
    if fmt == "JPEG":
        from PIL.JpegImagePlugin import JpegImageFile as cls
    elif fmt == "PNG":
        from PIL.PngImagePlugin import PngImageFile as cls
    elif fmt == "BMP":
        from PIL.BmpImagePlugin import BmpImageFile as cls
    elif fmt == "TIFF":
        from PIL.TiffImagePlugin import TiffImageFile as cls
    elif fmt == "JPEG2000":
        from PIL.Jpeg2KImagePlugin import Jpeg2KImageFile as cls
    else:
        from PIL.PpmImagePlugin import PpmImageFile as cls
    return cls


def _size(fh, fmt: str, head: bytes) -> Tuple[int, int]:
    if fmt == "WebP":
        return _webp_size(head)
    if fmt == "PNG":  # IHDR is the first chunk (PNG spec 5.6)
        if head[12:16] != b"IHDR":
            raise ValueError("first chunk is not IHDR")
        return struct.unpack(">II", head[16:24])
    if fmt == "JPEG":
        return _jpeg_size(fh)
    fh.seek(0)
    img = _plugin(fmt)(fh)
    try:
        return img.size
    finally:
        img.close()


def header_problem(path: str) -> Optional[Tuple[str, str]]:
    """in: an image path -> out: None when DALI can decode it and its declared size is within the limits, else
    (kind, detail): kind "undecodable" (not a format DALI decodes, or a header that does not parse) or
    "too_large" (over ``MAX_IMAGE_PIXELS`` or ``MAX_ASPECT_RATIO``); detail says what was found, e.g.
    "GIF" or "30000 x 30000 = 900,000,000 pixels, over the limit of 89,478,485". Reads the header only (the
    first bytes, and as far as the format's size field). OSError (unreadable) propagates."""
    with open(path, "rb") as fh:
        return stream_problem(fh)


def stream_problem(fh) -> Optional[Tuple[str, str]]:
    """``header_problem`` of an open, seekable binary file (e.g. a tar member), from its current start."""
    head = fh.read(_HEAD)
    fmt = sniff_format(head)
    if fmt not in DALI_FORMATS:
        what = "an unrecognised header" if fmt == "unknown" else fmt
        return "undecodable", f"{what}; DALI decodes {', '.join(DALI_FORMATS)}"
    try:
        width, height = _size(fh, fmt, head)
    except Exception as exc:  # noqa: BLE001 - Pillow's header parsers raise many kinds; all mean "broken"
        return "undecodable", f"{fmt} header does not parse: {str(exc) or type(exc).__name__}"
    if width < 1 or height < 1:
        return "undecodable", f"{fmt} header declares {width} x {height} pixels"
    if fmt == "PNG" and max(width, height) > PNG_MAX_SIDE:
        return "undecodable", (f"PNG of {width} x {height} pixels: DALI's PNG decoder (libpng) takes at most "
                               f"{PNG_MAX_SIDE:,} on a side")
    pixels = width * height
    if MAX_IMAGE_PIXELS is not None and pixels > MAX_IMAGE_PIXELS:
        return "too_large", f"{width} x {height} = {pixels:,} pixels, over the limit of {MAX_IMAGE_PIXELS:,}"
    aspect = max(width, height) / min(width, height)
    if MAX_ASPECT_RATIO is not None and aspect > MAX_ASPECT_RATIO:
        return "too_large", f"{width} x {height} pixels, aspect ratio {aspect:,.0f}:1 over the limit of " \
                            f"{MAX_ASPECT_RATIO:g}:1"
    return None
