"""Finding the samples of a dataset before the pipeline starts: ImageFolder directories, file lists and
WebDataset shards. Every problem is reported here, naming the path, before the first batch; what is left out on
purpose (non-image files, hidden entries, folders reached again through a link) is counted and logged.
"""

from __future__ import annotations

import glob
import hashlib
import io
import logging
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import image_headers
from .shards import WDS_IMAGE_EXT, WDS_LABEL_EXT, parse_label, scan_shard, scan_shard_images

__all__ = ["IMAGE_EXTENSIONS", "Dataset", "find_dataset", "find_classes", "find_corrupt", "without_corrupt",
           "diagnose", "WDS_IMAGE_EXT", "WDS_LABEL_EXT"]

log = logging.getLogger("dali_mixup")

#: Extensions read as images (torchvision's ImageFolder list, lower case); anything else is ignored and counted.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_STAT_CHUNK = 512  # files are checked in chunks: the first inline, timed; the rest
_STAT_THREADS = 16  # ... in parallel when a stat is slow (a network filesystem), else inline
_SLOW_STAT_S = 20e-6

# What a file check can find, and what it means. Each names the file(s) in the error it raises.
_PROBLEMS = {
    "name": (ValueError, "with a name that is not valid UTF-8 (DALI takes UTF-8 paths: rename it)"),
    "missing": (FileNotFoundError, "not found (a broken symbolic link, or removed after being listed)"),
    "unreadable": (PermissionError, "not readable (permission denied, or an I/O error)"),
    "special": (ValueError, "not regular (a folder, pipe or device)"),
    "empty": (ValueError, "empty (0 bytes; skip_corrupt=True leaves empty and corrupt images out)"),
    "corrupt": (ValueError, "corrupt (not decodable; skip_corrupt=True leaves corrupt images out)"),
    "undecodable": (ValueError, "not in a format DALI decodes (skip_corrupt=True leaves such images out)"),
    "too_large": (ValueError, "too large to decode safely (skip_corrupt=True leaves such images out; the limits: "
                              "dali_mixup.image_headers, --max-image-pixels, --max-aspect-ratio)"),
}
_SKIPPABLE = ("empty", "undecodable", "too_large")  # left out by skip_corrupt at the scan


_NOT_READ = {  # what an ImageFolder leaves out on purpose (counted in Dataset, logged)
    "ignored": "file(s) ignored: not images (by extension)",
    "hidden": "hidden entr(y/ies) skipped (the name starts with '.')",
    "relinked": "link(s) not followed: they lead to a folder already read (a loop, or a second link to it)",
}


@dataclass(frozen=True)
class Dataset:
    """The samples of one split.

    kind "files" (ImageFolder or file list): ``files`` and ``labels`` (int), ``classes`` for ImageFolder (the
    class names by index: the sorted class folders, or the names of a ``classes=`` numbering).
    kind "webdataset": ``shards`` (tar paths), ``shard_sizes`` (samples per shard), ``labels`` in sample order
    (read from the ``.cls`` members).
    Counted, not read: ``ignored`` (files, or tar members, that are not images or labels), ``hidden`` (entries of
    an ImageFolder whose name starts with "."), ``relinked`` (folders reached again through a symbolic link, e.g.
    a link to a parent: read once), ``skipped`` (empty or corrupt images left out by ``skip_corrupt``).
    Counted and read: ``duplicates`` (samples naming a file that an earlier sample names too).
    """

    kind: str
    source: str
    files: List[str] = field(default_factory=list)
    labels: List[int] = field(default_factory=list)
    classes: Optional[List[str]] = None
    shards: List[str] = field(default_factory=list)
    shard_sizes: List[int] = field(default_factory=list)
    ignored: int = 0
    hidden: int = 0
    relinked: int = 0
    duplicates: int = 0
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    def fingerprint(self) -> str:
        """in: the sample list -> out: sha256 hex of it: paths relative to the dataset's folder and labels
        (files), or shard names, samples per shard and labels (WebDataset). The same data moved keeps it."""
        h = hashlib.sha256(self.kind.encode())
        if self.kind == "files":
            root = os.path.join(self.source if self.classes is not None else os.path.dirname(self.source), "")
            names = [f[len(root):] if f.startswith(root) else os.path.relpath(f, root) for f in self.files]
        else:
            names = [f"{os.path.basename(s)}:{n}" for s, n in zip(self.shards, self.shard_sizes)]
        h.update("\0".join(names).encode("utf-8", "surrogateescape"))
        h.update(np.asarray(self.labels, dtype=np.int64).tobytes())
        return h.hexdigest()


def _name_some(items: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _raise_problems(problems: Dict[str, List[str]], source: str) -> None:
    """Raise for the first kind of problem found (in ``_PROBLEMS`` order), naming up to three files."""
    for kind, (exc, meaning) in _PROBLEMS.items():
        found = problems.get(kind)
        if found and len(found) == 1:
            raise exc(f"{found[0]}: image file {meaning}")
        if found:
            raise exc(f"{source}: {len(found)} image files {meaning}: {_name_some(found)}")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _file_problem(path: str) -> Tuple[Optional[str], Optional[Tuple[int, int]]]:
    """in: a path -> out: (what is wrong with it or None, its identity (device, inode) when readable)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "name", None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing", None
    except OSError:  # permission denied on a parent, a link loop, a name too long, I/O error
        return "unreadable", None
    if not stat.S_ISREG(st.st_mode):
        return "special", None
    if not os.access(path, os.R_OK):
        return "unreadable", None
    if st.st_size == 0:
        return "empty", None
    return None, (st.st_dev, st.st_ino)


def _check_chunk(paths: Sequence[str]):
    return [_with_header(p, _file_problem(p)) for p in paths]


def _with_header(path: str, found: tuple) -> tuple:
    """A file that passed the stat checks: what its header says (image_headers), as (kind, detail)."""
    if found[0] is not None:
        return found
    try:
        bad = image_headers.header_problem(path)
    except OSError:
        return "unreadable", None
    return bad if bad is not None else found


def _check_shard_headers(shard: str) -> None:
    """The image members of a shard, by their headers (image_headers): one DALI cannot decode, or one too large
    to decode safely, is an error naming the shard, the sample key and what its header says."""
    problems = []

    def fine(fh) -> bool:
        problem = image_headers.stream_problem(fh)
        if problem is not None and "header does not parse" in problem[1]:
            return True  # a known format, broken: DALI fails on it cleanly, and the read names shard and key
        if problem is not None:
            problems.append(problem[1])
        return problem is None

    bad = scan_shard_images(shard, fine)
    if bad:
        shown = [f"{key} ({what})" for key, what in zip(bad, problems)]
        raise ValueError(f"{shard}: {len(bad)} image(s) refused by their header (not in a format DALI decodes, or "
                         f"too large to decode safely): sample(s) {_name_some(shown)}")


def _check_files(paths: Sequence[str], where: Sequence[str], source: str, skip_empty: bool) -> Tuple[List[int], list]:
    """Stat every file: raise for missing, unreadable, special, badly named or (unless ``skip_empty``) empty
    ones, naming them as ``where`` does. -> (indices kept, identities of those kept)."""
    if not paths:
        return [], []
    chunks = [paths[i:i + _STAT_CHUNK] for i in range(0, len(paths), _STAT_CHUNK)]
    start = time.perf_counter()
    results = _check_chunk(chunks[0])
    if len(chunks) > 1 and (time.perf_counter() - start) / len(chunks[0]) > _SLOW_STAT_S:
        with ThreadPoolExecutor(_STAT_THREADS) as pool:  # a network filesystem: hide its latency
            results += [r for chunk in pool.map(_check_chunk, chunks[1:]) for r in chunk]
    else:  # a local one: threads would only contend for the GIL
        results += [r for chunk in chunks[1:] for r in _check_chunk(chunk)]
    problems: Dict[str, List[str]] = {}
    keep, ids, left_out = [], [], []
    for i, (problem, ident) in enumerate(results):
        if problem is None:
            keep.append(i)
            ids.append(ident)
        elif problem in _SKIPPABLE and skip_empty:
            if problem != "empty":
                left_out.append(f"{where[i]} ({ident})")
        else:
            shown = where[i] if problem != "name" else repr(os.fsencode(paths[i]))
            shown += f" ({ident})" if isinstance(ident, str) else ""  # what the header said
            problems.setdefault(problem, []).append(shown)
    _raise_problems(problems, source)
    if left_out:
        log.warning("%s: skipped %d image(s) that DALI cannot decode or that are too large to decode safely: %s",
                    source, len(left_out), _name_some(left_out))
    return keep, ids


def _count_duplicates(files: List[str], labels: List[int], ids: list, source: str) -> int:
    """Samples naming a file already named (by the same path, another link, or a hard link): kept (a list may
    repeat a file on purpose), counted and logged, with a warning when the two labels differ."""
    first: Dict[Tuple[int, int], int] = {}
    dups, conflicts = [], []
    for i, ident in enumerate(ids):
        j = first.setdefault(ident, i)
        if j != i:
            dups.append(files[i])
            if labels[i] != labels[j]:
                conflicts.append(f"{files[j]} (label {labels[j]}) = {files[i]} (label {labels[i]})")
    if dups:
        log.warning("%s: %d sample(s) name a file already named (read once per naming, every epoch): %s",
                    source, len(dups), _name_some(dups))
    if conflicts:
        log.warning("%s: %d file(s) carry two different labels: %s", source, len(conflicts), _name_some(conflicts))
    return len(dups)


# -- ImageFolder --------------------------------------------------------------------------------------------------

def _entries(folder: str) -> List[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise type(exc)(f"{folder}: cannot list the folder ({exc.strerror or exc})") from exc


def _is_broken_link(entry: os.DirEntry) -> bool:
    return entry.is_symlink() and not os.path.exists(entry.path)


def _identity(path: str) -> Tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _walk_class(folder: str, seen: set, counts: Dict[str, list]) -> List[str]:
    """Image paths under one class folder, in torchvision's order (sorted by folder, then name). Links are
    followed, but never to a folder already read (``seen``: the root, every class folder, every folder walked):
    a link loop, or a second link to a folder, is counted in ``relinked`` instead."""
    found: List[Tuple[str, str]] = []
    stack = [folder]
    while stack:
        current = stack.pop()
        for e in _entries(current):
            if e.name.startswith("."):
                counts["hidden"].append(e.path)
            elif _is_broken_link(e):
                raise FileNotFoundError(f"{e.path}: broken symbolic link (its target {os.readlink(e.path)!r} "
                                        "does not exist)")
            elif e.is_dir():
                ident = _identity(e.path)
                if ident in seen:
                    counts["relinked"].append(e.path)
                else:
                    seen.add(ident)
                    stack.append(e.path)
            elif _is_image(e.name):
                found.append((current, e.name))
            else:
                counts["ignored"].append(e.path)
    return [os.path.join(d, n) for d, n in sorted(found)]


def _class_folders(root: Path, counts: Dict[str, list]) -> List[str]:
    classes = []
    for e in _entries(str(root)):
        if e.name.startswith("."):
            counts["hidden"].append(e.path)
        elif _is_broken_link(e):
            raise FileNotFoundError(f"{e.path}: broken symbolic link in the ImageFolder root (a missing class "
                                    "folder would shift every label after it)")
        elif e.is_dir():
            classes.append(e.name)
        else:
            counts["ignored"].append(e.path)
    if not classes:
        raise ValueError(f"{root}: no class sub-folders (expected an ImageFolder layout: {root}/<class>/<image>; "
                         "folders whose name starts with '.' are not classes)")
    return classes


def find_classes(root: Union[str, os.PathLike]) -> List[str]:
    """in: an ImageFolder -> out: its class names, sorted, as the loader numbers them (torchvision's
    ``find_classes`` rule, except that folders whose name starts with "." are not classes: ``.ipynb_checkpoints``,
    ``.snapshot``). The one rule for the loader, ``dali-mixup train`` and the ``compat`` builders."""
    return _class_folders(Path(root), {"ignored": [], "hidden": [], "relinked": []})


def _numbering(classes, num_classes: Optional[int]) -> Dict[str, int]:
    """``classes=`` (a sequence of names, or a mapping name -> index) checked -> out: name -> index."""
    if isinstance(classes, Mapping):
        numbering = dict(classes)
    elif isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence):
        raise TypeError(f"classes must be a sequence of class names or a dict name -> index, got "
                        f"{type(classes).__name__}")
    else:
        numbering = {}
        for i, name in enumerate(classes):
            if name in numbering:
                raise ValueError(f"classes names {name!r} twice (positions {numbering[name]} and {i})")
            numbering[name] = i
    if not numbering:
        raise ValueError("classes is empty")
    for name, index in numbering.items():
        if not isinstance(name, str):
            raise TypeError(f"classes: class names must be str, got {name!r}")
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"classes: the index of {name!r} must be an int >= 0, got {index!r}")
        if num_classes is not None and index >= num_classes:
            raise ValueError(f"classes: the index of {name!r} is {index}, out of range for num_classes={num_classes}")
    return {name: int(index) for name, index in numbering.items()}


def _image_folder(root: Path, skip_empty: bool, classes=None, num_classes: Optional[int] = None) -> Dataset:
    counts: Dict[str, list] = {"ignored": [], "hidden": [], "relinked": []}
    folders = _class_folders(root, counts)  # torchvision's ImageFolder numbering: sorted names
    if classes is None:
        numbering, classes = {name: i for i, name in enumerate(folders)}, folders
    else:
        numbering = _numbering(classes, num_classes)
        unknown = [name for name in folders if name not in numbering]
        if unknown:
            raise ValueError(f"{root / unknown[0]}: a class folder that classes= does not name ({len(numbering)} "
                             f"classes, e.g. {_name_some(sorted(numbering))}); its samples would get no label"
                             + (f" (and {len(unknown) - 1} more such folders)" if len(unknown) > 1 else ""))
        classes = sorted(numbering, key=lambda name: (numbering[name], name))
    files, labels = [], []
    seen = {_identity(str(root))} | {_identity(str(root / name)) for name in folders}
    for name in folders:
        label = numbering[name]
        found = _walk_class(str(root / name), seen, counts)
        if not found:
            raise ValueError(f"{root / name}: class folder with no images (no file ends in "
                             f"{', '.join(IMAGE_EXTENSIONS)}); "
                             "torchvision's ImageFolder refuses it too: add images, remove it, or hide it by "
                             "starting its name with '.'")
        files += found
        labels += [label] * len(found)
    keep, ids = _check_files(files, files, str(root), skip_empty)
    skipped = len(files) - len(keep)
    files, labels = [files[i] for i in keep], [labels[i] for i in keep]
    for what, entries in counts.items():
        if entries:
            log.warning("%s: %d %s: %s", root, len(entries), _NOT_READ[what], _name_some(entries))
    return Dataset("files", str(root), files=files, labels=labels, classes=classes,
                   ignored=len(counts["ignored"]), hidden=len(counts["hidden"]), relinked=len(counts["relinked"]),
                   duplicates=_count_duplicates(files, labels, ids, str(root)), skipped=skipped)


# -- file list ----------------------------------------------------------------------------------------------------

def _list_text(path: Path) -> str:
    """The list's text: UTF-8 (a byte-order mark, even mid-file, is dropped), else an error naming the line."""
    raw = path.read_bytes()
    if b"\0" in raw[:4096]:
        raise ValueError(f"{path}: a binary file, not a file list (expected text lines 'path label')")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte {raw[exc.start]:#04x}); save the list as "
                         "UTF-8") from None
    return text.replace("\ufeff", "")


def _file_list(path: Path, num_classes: Optional[int], skip_empty: bool) -> Dataset:
    files, labels, where, ignored = [], [], [], 0
    for lineno, line in enumerate(_list_text(path).splitlines(), 1):
        line = line.strip()
        if not line:  # no comments: '#12.jpg 3' is a file named '#12.jpg' (a '# note' line is an error naming it)
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"{path}:{lineno}: expected 'path label', got {line!r}")
        name, label = parts
        label = parse_label(label, f"{path}:{lineno}", num_classes)
        if not _is_image(name):
            ignored += 1
            continue
        files.append(name if os.path.isabs(name) else os.path.join(path.parent, name))
        labels.append(label)
        where.append(f"{path}:{lineno}: {files[-1]}")
    if not files:
        raise ValueError(f"{path}: the file list names no images")
    if ignored:
        log.warning("%s: ignored %d entr(y/ies) that are not images (by extension)", path, ignored)
    keep, ids = _check_files(files, where, str(path), skip_empty)
    skipped = len(files) - len(keep)
    files, labels = [files[i] for i in keep], [labels[i] for i in keep]
    return Dataset("files", str(path), files=files, labels=labels, ignored=ignored,
                   duplicates=_count_duplicates(files, labels, ids, str(path)), skipped=skipped)


# -- WebDataset ---------------------------------------------------------------------------------------------------

def _webdataset(shards: Sequence[str], source: str, num_classes: Optional[int]) -> Dataset:
    if not shards:
        raise ValueError("data is an empty list of WebDataset shards")
    for s in shards:
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{os.fsencode(s)!r}: a shard name that is not valid UTF-8 (DALI takes UTF-8 "
                             "paths: rename it)") from None
    labels, sizes, ignored, scanned, repeated = [], [], 0, {}, []
    for shard in shards:
        real = os.path.realpath(shard)
        if real in scanned:
            repeated.append(shard)
        else:
            scanned[real] = scan_shard(shard, num_classes)
            _check_shard_headers(shard)
        shard_labels, junk = scanned[real]
        labels += shard_labels
        sizes.append(len(shard_labels))
        ignored += junk if shard not in repeated else 0
    if not labels:
        raise ValueError(f"{source}: the WebDataset shards hold no samples")
    if ignored:
        log.warning("%s: ignored %d tar member group(s) that are neither an image nor a label", source, ignored)
    duplicates = sum(len(scanned[os.path.realpath(s)][0]) for s in repeated)
    if repeated:
        log.warning("%s: %d shard(s) listed again (read once per listing, every epoch): %s", source, len(repeated),
                    _name_some(repeated))
    return Dataset("webdataset", source, labels=labels, shards=list(shards), shard_sizes=sizes, ignored=ignored,
                   duplicates=duplicates)


# -- dispatch -----------------------------------------------------------------------------------------------------

def _shards_in(path: Path, entries: List[os.DirEntry]) -> Optional[List[str]]:
    """The tar files of a folder of shards (a folder with tars and no sub-folder), else None."""
    visible = [e for e in entries if not e.name.startswith(".")]
    tars = [e.path for e in visible if e.name.endswith(".tar") and e.is_file()]
    if not tars or any(e.is_dir() for e in visible):
        return None
    others = [e.name for e in visible if e.path not in tars]
    if others:
        log.warning("%s: ignored %d file(s) beside the WebDataset shards, e.g. %s", path, len(others), others[0])
    return tars


def find_dataset(data: Union[str, os.PathLike, Sequence[str]], num_classes: Optional[int] = None, *,
                 skip_empty: bool = False, classes: Union[None, Sequence[str], Mapping[str, int]] = None) -> Dataset:
    """The samples named by ``data``, every file checked (exists, readable, regular, not empty, UTF-8 name).

    ``data``: an ImageFolder-style directory (``<class>/<image>``, labels numbered as torchvision numbers
    them; entries whose name starts with "." are skipped and counted), a file list (UTF-8 text, ``path label``
    per line, relative paths from the list's folder), WebDataset shards (a ``.tar`` path, a glob such as
    ``shards/train-*.tar``, a list of tar paths, or a directory holding tar files; image + ``.cls`` per sample).
    ``skip_empty``: leave empty (0-byte) images out, counted in ``skipped``, instead of raising.
    ``classes``: ImageFolder only, the class numbering (names by index, or a dict name -> index; see
    ``create_dali_loader``) instead of the folders' own: a class folder it does not name is an error.

    Raises ``TypeError`` for a ``data`` of another type, ``FileNotFoundError``/``PermissionError``/``ValueError``
    naming the path for a missing, unreadable, empty or image-less source, and ``ValueError`` naming the sample
    if a label is negative or >= ``num_classes``.
    """
    named = os.fsdecode(data) if isinstance(data, (str, bytes, os.PathLike)) else ""
    if classes is not None and (isinstance(data, (list, tuple)) or named.endswith(".tar")
                                or (any(ch in named for ch in "*?[") and not os.path.exists(named))):
        raise ValueError(f"classes: applies to ImageFolder data; data={data!r} names WebDataset shards, whose "
                         ".cls labels are class indices already")
    if isinstance(data, (list, tuple)):
        if not all(isinstance(p, (str, os.PathLike)) for p in data):
            raise TypeError("data as a list must hold WebDataset shard paths (str or os.PathLike)")
        return _webdataset([os.fspath(p) for p in data], f"{len(data)} shards", num_classes)
    if not isinstance(data, (str, bytes, os.PathLike)):
        raise TypeError(f"data must be a folder, a file list, a .tar shard, a glob or a list of shards, got "
                        f"{type(data).__name__}")
    text = os.fsdecode(data)
    path = Path(text)
    if any(ch in text for ch in "*?[") and not path.exists():
        shards = sorted(glob.glob(text))
        if not shards:
            raise FileNotFoundError(f"no WebDataset shards match {text}")
        return _webdataset(shards, text, num_classes)
    if not path.exists():
        raise FileNotFoundError(f"data not found: {path}")
    if path.is_dir():
        entries = _entries(str(path))
        if not entries:
            raise ValueError(f"{path}: the directory is empty")
        shards = _shards_in(path, entries)
        if shards and classes is not None:
            raise ValueError(f"classes: applies to ImageFolder data; {path} is a folder of WebDataset shards, whose "
                             ".cls labels are class indices already")
        ds = _webdataset(shards, str(path), num_classes) if shards else _image_folder(path, skip_empty, classes,
                                                                                    num_classes)
    elif path.suffix == ".tar":
        ds = _webdataset([str(path)], str(path), num_classes)
    elif _is_image(path.name):
        raise ValueError(f"{path}: data is a single image; pass its ImageFolder (the folder above its class "
                         "folder), a file list or WebDataset shards")
    else:
        ds = _file_list(path, num_classes, skip_empty)
    if classes is not None and ds.classes is None:
        raise ValueError(f"classes: applies to ImageFolder data; {ds.source} is a file list, whose labels are "
                         "class indices already")
    if num_classes is not None and classes is None and ds.classes is not None and len(ds.classes) > num_classes:
        raise ValueError(f"{ds.source}: {len(ds.classes)} class folders but num_classes={num_classes}")
    return ds


# -- corrupt images -----------------------------------------------------------------------------------------------

def _looks_decodable(fh) -> bool:
    """in: a seekable binary file object -> out: whether it parses as an image (header, and for JPEG the
    end-of-image marker in its last 4 KiB): catches truncated and non-image files without decoding pixels."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(fh) as img:
            img.size  # header parsed
            fmt = img.format
        if fmt == "JPEG":
            size = fh.seek(0, io.SEEK_END)
            fh.seek(max(0, size - 4096))
            return b"\xff\xd9" in fh.read()
        return True
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return False


def _problem_or_corrupt(path: str) -> Optional[str]:
    problem, _ = _with_header(path, _file_problem(path))
    if problem is not None:
        return problem
    try:
        with open(path, "rb") as fh:
            return None if _looks_decodable(fh) else "corrupt"
    except OSError:
        return "unreadable"


def diagnose(ds: Dataset, num_classes: Optional[int] = None) -> Optional[Exception]:
    """in: a dataset whose pipeline failed -> out: an error naming what is wrong with its files now (missing,
    unreadable, empty, corrupt; for shards also truncation and bad labels, by shard and sample key), or None."""
    if ds.kind == "webdataset":
        for shard in ds.shards:
            try:
                scan_shard(shard, num_classes)
                bad = scan_shard_images(shard, _looks_decodable)
            except (OSError, ValueError) as exc:
                return exc
            if bad:
                return ValueError(f"{shard}: corrupt image(s) in sample(s) {_name_some(bad)}")
        return None
    problems: Dict[str, List[str]] = {}
    for f in ds.files:
        problem = _problem_or_corrupt(f)
        if problem is not None:
            problems.setdefault(problem, []).append(f)
    try:
        _raise_problems(problems, ds.source)
    except (OSError, ValueError) as exc:
        return exc
    return None


def find_corrupt(files: Sequence[str]) -> List[str]:
    """The files of ``files`` that are missing, unreadable, empty or not decodable images (cheap check, see
    ``_looks_decodable``)."""
    return [f for f in files if _problem_or_corrupt(f) is not None]


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
    return replace(ds, files=[ds.files[i] for i in keep], labels=[ds.labels[i] for i in keep],
                   skipped=ds.skipped + len(bad))
