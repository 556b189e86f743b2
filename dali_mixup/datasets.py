"""Finding the samples of a dataset before the pipeline starts: ImageFolder directories, file lists and
WebDataset shards. Every problem is reported here, naming the path, before the first batch.
"""

from __future__ import annotations

import glob
import logging
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Union

__all__ = ["IMAGE_EXTENSIONS", "Dataset", "find_dataset", "find_corrupt", "without_corrupt"]

log = logging.getLogger("dali_mixup")

#: Extensions read as images (torchvision's ImageFolder list, lower case); anything else is ignored and counted.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: WebDataset components read as the image (first match wins) and as the label.
WDS_IMAGE_EXT = "jpg;jpeg;png;webp;bmp;tif;tiff"
WDS_LABEL_EXT = "cls"


@dataclass(frozen=True)
class Dataset:
    """The samples of one split.

    kind "files" (ImageFolder or file list): ``files`` and ``labels`` (int), ``classes`` for ImageFolder.
    kind "webdataset": ``shards`` (tar paths), ``labels`` in sample order (read from the ``.cls`` members).
    ``ignored``: files skipped because their extension is not an image's; ``skipped``: corrupt images left out
    by the opt-in skip policy.
    """

    kind: str
    source: str
    files: List[str] = field(default_factory=list)
    labels: List[int] = field(default_factory=list)
    classes: Optional[List[str]] = None
    shards: List[str] = field(default_factory=list)
    ignored: int = 0
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.labels)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _image_folder(root: Path) -> Dataset:
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())  # torchvision's ImageFolder numbering
    if not classes:
        raise ValueError(f"{root}: no class sub-folders (expected an ImageFolder layout: {root}/<class>/<image>)")
    files, labels, ignored = [], [], 0
    for label, name in enumerate(classes):
        for dirpath, _, names in sorted(os.walk(root / name, followlinks=True)):
            for fname in sorted(names):
                if _is_image(fname):
                    files.append(os.path.join(dirpath, fname))
                    labels.append(label)
                else:
                    ignored += 1
    if not files:
        raise ValueError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) in its {len(classes)} class folders")
    if ignored:
        log.warning("%s: ignored %d file(s) that are not images (by extension)", root, ignored)
    return Dataset("files", str(root), files=files, labels=labels, classes=classes, ignored=ignored)


def _file_list(path: Path) -> Dataset:
    files, labels, ignored = [], [], 0
    base = path.parent
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2:
                raise ValueError(f"{path}:{lineno}: expected 'path label', got {line!r}")
            name, label = parts
            try:
                label = int(label)
            except ValueError:
                raise ValueError(f"{path}:{lineno}: label must be an integer, got {label!r}") from None
            if label < 0:
                raise ValueError(f"{path}:{lineno}: label must be >= 0, got {label}")
            if not _is_image(name):
                ignored += 1
                continue
            full = name if os.path.isabs(name) else str(base / name)
            if not os.path.isfile(full):
                raise FileNotFoundError(f"{path}:{lineno}: image file not found: {full}")
            files.append(full)
            labels.append(label)
    if not files:
        raise ValueError(f"{path}: the file list names no images")
    if ignored:
        log.warning("%s: ignored %d entr(y/ies) that are not images (by extension)", path, ignored)
    return Dataset("files", str(path), files=files, labels=labels, ignored=ignored)


def _webdataset(shards: Sequence[str], source: str) -> Dataset:
    labels: List[int] = []
    for shard in shards:
        if not os.path.isfile(shard):
            raise FileNotFoundError(f"WebDataset shard not found: {shard}")
        samples = {}
        order = []
        try:
            with tarfile.open(shard, "r:") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    key, _, ext = member.name.partition(".")
                    if key not in samples:
                        samples[key] = {}
                        order.append(key)
                    if ext.lower() == WDS_LABEL_EXT:
                        text = tar.extractfile(member).read().decode("ascii", "replace").strip()
                        try:
                            samples[key]["label"] = int(text)
                        except ValueError:
                            raise ValueError(f"{shard}: {member.name}: label must be an integer, got {text!r}") from None
                    elif ext.lower() in WDS_IMAGE_EXT.split(";"):
                        samples[key]["image"] = True
        except tarfile.TarError as exc:
            raise ValueError(f"{shard}: not a readable tar file ({exc})") from exc
        for key in order:
            sample = samples[key]
            if "image" not in sample or "label" not in sample:
                missing = "an image" if "image" not in sample else f"a .{WDS_LABEL_EXT} label"
                raise ValueError(f"{shard}: sample {key!r} has no {missing}")
            labels.append(sample["label"])
    if not labels:
        raise ValueError(f"{source}: the WebDataset shards hold no samples")
    return Dataset("webdataset", source, labels=labels, shards=list(shards))


def find_dataset(data: Union[str, os.PathLike, Sequence[str]], num_classes: Optional[int] = None) -> Dataset:
    """The samples named by ``data``.

    ``data``: an ImageFolder-style directory (``<class>/<image>``, labels numbered as torchvision numbers
    them), a file list (text, ``path label`` per line, relative paths from the list's folder), WebDataset
    shards (a ``.tar`` path, a glob such as ``shards/train-*.tar``, a list of tar paths, or a directory holding
    only tar files; image + ``.cls`` per sample).

    Raises ``FileNotFoundError``/``ValueError`` naming the path for a missing, empty or image-less source, and
    ``ValueError`` if a label is >= ``num_classes``.
    """
    if isinstance(data, (list, tuple)):
        ds = _webdataset([str(p) for p in data], f"{len(data)} shards")
    else:
        text = os.fspath(data)
        path = Path(text)
        if any(ch in text for ch in "*?[") and not path.exists():
            shards = sorted(glob.glob(text))
            if not shards:
                raise FileNotFoundError(f"no WebDataset shards match {text}")
            ds = _webdataset(shards, text)
        elif not path.exists():
            raise FileNotFoundError(f"data not found: {path}")
        elif path.is_dir():
            entries = list(os.scandir(path))
            if not entries:
                raise ValueError(f"{path}: the directory is empty")
            tars = sorted(e.path for e in entries if e.is_file() and e.name.endswith(".tar"))
            if tars and not any(e.is_dir() for e in entries):
                ds = _webdataset(tars, str(path))
            else:
                ds = _image_folder(path)
        elif path.suffix == ".tar":
            ds = _webdataset([str(path)], str(path))
        else:
            ds = _file_list(path)
    if num_classes is not None:
        if ds.classes is not None and len(ds.classes) > num_classes:
            raise ValueError(f"{ds.source}: {len(ds.classes)} class folders but num_classes={num_classes}")
        top = max(ds.labels)
        if top >= num_classes:
            raise ValueError(f"{ds.source}: label {top} is out of range for num_classes={num_classes}")
    return ds


def _looks_decodable(path: str) -> bool:
    """Cheap check (header parse, and for JPEG the end-of-image marker): catches truncated and non-image files
    without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as img:
            img.size  # header parsed
            fmt = img.format
        if fmt == "JPEG":
            with open(path, "rb") as fh:
                fh.seek(max(0, os.path.getsize(path) - 4096))
                return b"\xff\xd9" in fh.read()
        return True
    except (OSError, UnidentifiedImageError, ValueError):
        return False


def find_corrupt(files: Sequence[str]) -> List[str]:
    """The files of ``files`` that are not decodable images (cheap check, see ``_looks_decodable``)."""
    return [f for f in files if not _looks_decodable(f)]


def without_corrupt(ds: Dataset) -> Dataset:
    """``ds`` minus its corrupt files (the opt-in skip policy); logs how many were skipped."""
    if ds.kind != "files":
        raise ValueError(f"{ds.source}: skipping corrupt images is supported for folders and file lists only")
    bad = set(find_corrupt(ds.files))
    if not bad:
        return ds
    log.warning("%s: skipped %d corrupt image(s), e.g. %s", ds.source, len(bad), sorted(bad)[0])
    keep = [i for i, f in enumerate(ds.files) if f not in bad]
    if not keep:
        raise ValueError(f"{ds.source}: every image is corrupt")
    return Dataset(ds.kind, ds.source, files=[ds.files[i] for i in keep], labels=[ds.labels[i] for i in keep],
                   classes=ds.classes, ignored=ds.ignored, skipped=len(bad))
