"""WebDataset shards read the way DALI's webdataset reader reads them, so that the scan counts what the
pipeline yields, and every problem is named by shard and sample key.

A shard is an uncompressed tar; a member ``<folder>/<name>.<ext>`` belongs to the sample whose key is
``<folder>/<name>`` (the name up to its first dot, as WebDataset splits keys) and its extension is the rest,
matched case-sensitively (as DALI does). The members of a sample are consecutive; a sample has one image and
one ``.cls`` label (ASCII digits).
"""

from __future__ import annotations

import os
import re
import tarfile
from typing import Callable, Iterator, List, Optional, Tuple

__all__ = ["WDS_IMAGE_EXT", "WDS_LABEL_EXT", "parse_label", "split_key", "scan_shard", "scan_shard_images"]

#: WebDataset components read as the image (first match wins) and as the label.
WDS_IMAGE_EXT = "jpg;jpeg;png;webp;bmp;tif;tiff"
WDS_LABEL_EXT = "cls"
_IMAGE_EXTS = frozenset(WDS_IMAGE_EXT.split(";"))
_INTEGER = re.compile(r"[+-]?[0-9]+\Z")
_BLOCK = 512
_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


def parse_label(text: str, where: str, num_classes: Optional[int] = None) -> int:
    """in: a label's text (``"3"``, ``" 3\\n"``) -> out: the int; ``ValueError`` naming ``where`` if it is not an
    integer (ASCII digits), is negative, or is >= ``num_classes``."""
    value = text.strip()
    if not _INTEGER.match(value):
        raise ValueError(f"{where}: label must be an integer, got {text!r}")
    label = int(value)
    if label < 0:
        raise ValueError(f"{where}: label must be >= 0, got {label}")
    if num_classes is not None and label >= num_classes:
        raise ValueError(f"{where}: label {label} is out of range for num_classes={num_classes}")
    return label


def split_key(name: str) -> Tuple[str, str]:
    """in: a tar member name -> out: (sample key, extension); ``train.v1/s0.seg.png`` -> (``train.v1/s0``,
    ``seg.png``); a name without a dot has the extension ``""``."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext


def _check_file(shard: str) -> int:
    if not os.path.exists(shard):
        raise FileNotFoundError(f"WebDataset shard not found: {shard}")
    if not os.path.isfile(shard):
        raise ValueError(f"{shard}: not a file (a WebDataset shard is a .tar file)")
    try:
        with open(shard, "rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        raise type(exc)(f"{shard}: cannot read the shard ({exc.strerror or exc})") from exc
    for prefix, kind in _COMPRESSED.items():
        if magic.startswith(prefix):
            raise ValueError(f"{shard}: a {kind}-compressed tar; DALI reads uncompressed tars only: decompress it")
    return os.path.getsize(shard)


def _members(shard: str) -> Iterator[Tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """Yield the regular-file members of a shard, checking that each is whole and that the archive ends with its
    end-of-archive block (a tar cut at a member boundary, or with a corrupt header, otherwise reads as a shorter
    valid tar); errors name the shard and the member."""
    size = _check_file(shard)
    last = None
    try:
        with open(shard, "rb") as fh, tarfile.open(fileobj=fh, mode="r:") as tar:
            for member in tar:
                if member.offset_data + member.size > size:
                    raise ValueError(f"{shard}: truncated: member {member.name!r} needs bytes up to "
                                     f"{member.offset_data + member.size}, the file ends at {size}")
                last = member.name
                if member.isfile():
                    yield tar, member
            fh.seek(tar.offset)
            block = fh.read(_BLOCK)
    except tarfile.TarError as exc:
        if "unexpected end of data" in str(exc):
            raise ValueError(f"{shard}: truncated: the data ends inside the tar (after member {last!r})") from exc
        raise ValueError(f"{shard}: not a readable tar file ({exc})") from exc
    after = f"after member {last!r}" if last else "at its start"
    if len(block) < _BLOCK:
        raise ValueError(f"{shard}: truncated: the tar ends without its end-of-archive block ({after})")
    if block.strip(b"\0"):
        raise ValueError(f"{shard}: corrupt tar header at byte {tar.offset} ({after})")


class _Sample:
    def __init__(self, key: str):
        self.key, self.members, self.image, self.label = key, [], None, None
        self.raw_key = None  # the key DALI's reader sees, where a PAX header holds the member's name


def _header_name(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    """The name in the member's own 512-byte header (ustar prefix + name), what DALI's reader goes by: it does
    not read PAX extended headers, where Python's tarfile puts a name that the header cannot hold."""
    tar.fileobj.seek(member.offset_data - _BLOCK)  # member.offset is that of its PAX header
    block = tar.fileobj.read(_BLOCK)
    name = block[:100].split(b"\0", 1)[0]
    prefix = block[345:500].split(b"\0", 1)[0] if block[257:262] == b"ustar" else b""
    return (prefix + b"/" + name if prefix else name).decode("utf-8", "replace")


def _check_pax_name(shard: str, tar: tarfile.TarFile, member: tarfile.TarInfo, sample: "_Sample",
                    previous: Optional["_Sample"]) -> None:
    """A member named in a PAX header (Python tarfile's default format, for a name over 100 characters or not
    ASCII): DALI reads the header's own (truncated or replaced) name instead. Fine while that name keeps the
    extension and the sample's grouping (a non-ASCII name); an error naming shard and member when it does not
    (a long name, cut: DALI found no samples and asserted)."""
    if "path" not in member.pax_headers:
        return
    raw_key, raw_ext = split_key(_header_name(tar, member))
    same = sample.raw_key in (None, raw_key)
    merged = previous is not None and (previous.raw_key or previous.key) == raw_key and len(sample.members) == 1
    sample.raw_key = raw_key
    if raw_ext != split_key(member.name)[1] or not same or merged:
        raise ValueError(f"{shard}: member {member.name!r} has its name in a PAX extended header (Python tarfile's "
                         "default format writes one for a name over 100 characters), which DALI's webdataset "
                         f"reader does not read: it sees {_header_name(tar, member)!r} and would not find this "
                         "sample; write the shard in GNU format (tarfile.open(..., format=tarfile.GNU_FORMAT), "
                         "or tar --format=gnu)")


def _groups(shard: str, num_classes: Optional[int]) -> List[_Sample]:
    """The shard's member groups (consecutive members with one key), labels parsed and checked."""
    groups: List[_Sample] = []
    for tar, member in _members(shard):
        key, ext = split_key(member.name)
        if not groups or key != groups[-1].key:
            groups.append(_Sample(key))
        sample = groups[-1]
        sample.members.append(member.name)
        _check_pax_name(shard, tar, member, sample, groups[-2] if len(groups) > 1 else None)
        if ext == WDS_LABEL_EXT:
            text = tar.extractfile(member).read().decode("ascii", "replace")
            sample.label = parse_label(text, f"{shard}: {member.name}", num_classes)
        elif ext in _IMAGE_EXTS and sample.image is None:
            if member.size == 0:
                raise ValueError(f"{shard}: sample {key!r}: the image {member.name!r} is empty (0 bytes)")
            sample.image = member.name
    return groups


def scan_shard(shard: str, num_classes: Optional[int] = None) -> Tuple[List[int], int]:
    """in: a shard path -> out: (the labels of its samples in order, the number of member groups that have
    neither an image nor a label (ignored, as the reader skips them)). Raises naming shard and key for members
    of a sample that are not consecutive, a sample with an image but no label or the reverse, an empty image, a
    bad label, a truncated or corrupt tar."""
    groups = _groups(shard, num_classes)
    samples = [g for g in groups if g.image is not None or g.label is not None]
    seen = set()
    for s in samples:
        if s.key in seen:
            raise ValueError(f"{shard}: the members of sample {s.key!r} are not consecutive ({s.members[0]!r} "
                             "comes after other samples); WebDataset and DALI read a sample's members together")
        seen.add(s.key)
    for s in samples:
        if s.label is None:
            raise ValueError(f"{shard}: sample {s.key!r} has no .{WDS_LABEL_EXT} label (members: "
                             f"{', '.join(s.members)})")
        if s.image is None:
            raise ValueError(f"{shard}: sample {s.key!r} has no image (members: {', '.join(s.members)}; image "
                             f"extensions, matched case-sensitively as DALI does: {WDS_IMAGE_EXT})")
    return [s.label for s in samples], len(groups) - len(samples)


def scan_shard_images(shard: str, decodable: Callable) -> List[str]:
    """in: a shard, ``decodable(file object) -> bool`` -> out: the keys of the samples whose image fails it."""
    bad = []
    for tar, member in _members(shard):
        key, ext = split_key(member.name)
        if ext in _IMAGE_EXTS and not decodable(tar.extractfile(member)):
            bad.append(key)
    return bad
