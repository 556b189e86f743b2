"""A training run's output folder, safe when it is shared: one trainer at a time (a lock naming its holder),
temporary files that cannot be redirected (exclusive creation, as ``tempfile.mkstemp``), the ones a killed
writer left behind cleaned (only when their writer is dead), and a folder that cannot be written found before
the first epoch rather than after it.

Temporary files are named ``.NAME.tmp-HOST-PID-XXXXXXXX`` (HOST and PID of the writer, XXXXXXXX random), so that a
later run can tell whether their writer still lives (on this host: ``os.kill(pid, 0)``; another host's are left
alone). The lock is ``train.lock``: a ``fcntl.flock`` held for the run (the system releases it when the process
ends, however it ends) and, inside, who holds it (pid, host, start time, command), which a refused trainer shows.
Where the filesystem has no ``flock``, the pid inside decides (a dead pid on this host: a stale lock, taken over).
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional

__all__ = ["LOCK", "LAST", "BEST", "OutputLocked", "OutputLock", "temp_prefix", "exclusive_temp", "new_temp_name",
           "pid_alive", "remove_stale_temps", "check_writable", "run_files", "prepare_output", "atomic_write",
           "atomic_link", "remove_if_unused"]

log = logging.getLogger("dali_mixup")

LOCK = "train.lock"
LAST, BEST = "checkpoint-last.pt", "checkpoint-best.pt"
ARGS_FILE = "args.json"  # the run's own flags (run_args)
NUMBERED = re.compile(r"checkpoint-(\d+)\.pt$")
_UMASK = os.umask(0o022)
os.umask(_UMASK)
#: Mode of the files a run writes: what ``open`` gives under the process's umask (mkstemp alone gives 0600).
FILE_MODE = 0o666 & ~_UMASK


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"


def temp_prefix(name: str) -> str:
    """in: the final file name -> out: the prefix of its temporary files (``.NAME.tmp-HOST-PID-``)."""
    return f".{name}.tmp-{_host()}-{os.getpid()}-"


def exclusive_temp(path: Path):
    """in: the final path -> out: (fd, temporary path) beside it, created exclusively (O_CREAT | O_EXCL: never an
    existing file, never through a planted symbolic link) with the umask's mode."""
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
    except OSError:  # a filesystem without modes: mkstemp's 0600 stays
        pass
    return fd, Path(tmp)


def new_temp_name(path: Path) -> Path:
    """in: the final path -> out: an unpredictable temporary name beside it, for ``os.link`` (which refuses an
    existing name and never follows a link there)."""
    return path.with_name(temp_prefix(path.name) + secrets.token_hex(4))


_TEMP = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[A-Za-z0-9_]+$")


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (one of another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(out: Path) -> list:
    """Remove the temporary files in ``out`` whose writer, on this host, is dead (a run killed while writing a
    checkpoint). Those of a live writer, or of another host, are kept. -> the names removed (logged)."""
    removed = []
    here = _host()
    for p in sorted(out.iterdir()) if out.is_dir() else []:
        m = _TEMP.match(p.name)
        if m is None or m.group("host") != here or pid_alive(int(m.group("pid"))):
            continue
        if p.is_symlink() or p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p.name)
    if removed:
        log.warning("%s: removed %d temporary file(s) left by a writer that no longer runs: %s", out, len(removed),
                    ", ".join(removed[:3]) + (" ..." if len(removed) > 3 else ""))
    return removed


def check_writable(out: Path, flag: str = "--output") -> None:
    """An error naming ``out`` now, when files cannot be created in it (rather than at the first checkpoint)."""
    try:
        fd, tmp = exclusive_temp(out / "write-test")
    except OSError as exc:
        raise PermissionError(f"{flag} {out}: cannot write there ({exc.strerror or exc}); choose another "
                              f"{flag} or fix its permissions") from None
    os.close(fd)
    tmp.unlink(missing_ok=True)


class OutputLocked(RuntimeError):
    """Another trainer holds the output folder."""


class OutputLock:
    """``train.lock`` in the output folder, held from ``acquire`` to ``release`` (or the end of the process)."""

    def __init__(self, out: Path):
        self.out, self.path, self.fd = out, out / LOCK, None

    def _holder(self) -> dict:
        try:
            text = self.path.read_text(encoding="utf-8")
            return json.loads(text) if text.strip() else {}
        except (OSError, ValueError):
            return {}

    @staticmethod
    def describe(holder: dict) -> str:
        if not holder:
            return "a process that wrote no details"
        return (f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}"
                + (f": {holder['command']}" if holder.get("command") else ""))

    def _refuse(self, holder: dict):
        raise OutputLocked(f"--output {self.out}: another trainer is running there ({self.describe(holder)}); "
                           f"wait for it, stop it, or choose another --output (its lock: {self.path})")

    def acquire(self) -> "OutputLock":
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, FILE_MODE)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise PermissionError(f"--output {self.out}: {LOCK} is a symbolic link; remove it") from None
            raise
        try:
            self._lock(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    def _lock(self, fd: int) -> None:
        import fcntl
        previous = self._holder()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._refuse(previous)
        except OSError as exc:  # no flock on this filesystem: the pid inside decides
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            elsewhere = previous.get("host") != socket.gethostname()
            if previous and (elsewhere or pid_alive(int(previous.get("pid", 0)))):
                self._refuse(previous)
        if previous and previous.get("pid") != os.getpid():
            log.warning("%s: a stale lock (%s, no longer running) taken over", self.path, self.describe(previous))
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime()),
              "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        os.fsync(fd)

    def release(self) -> None:
        """Empty the lock file and let the lock go (the file stays: removing it would let a second trainer lock
        the removed file while a third locks a new one)."""
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


def run_files(out: Path) -> List[Path]:
    """in: an output folder -> out: the files a training run writes there (checkpoints, metrics, summary)."""
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.name in ("metrics.csv", "summary.json", LAST, BEST)
                  or NUMBERED.match(p.name))


def _refuse_a_run_there(out: Path, resume: bool, overwrite: bool) -> None:
    found = run_files(out)
    if found and not (resume or overwrite):
        names = ", ".join(p.name for p in found[:3]) + (", ..." if len(found) > 3 else "")
        raise ValueError(f"--output {out} already holds a run ({names}): pass --resume to continue it, --overwrite "
                         f"to replace it, or choose another --output")


def prepare_output(out: Path, *, resume: bool, overwrite: bool, is_main: bool) -> Optional["OutputLock"]:
    """in: --output, whether --resume/--overwrite were given -> out: the folder ready, and (main process) its lock,
    held for the run. A run already there is an error unless resumed (kept, appended to) or overwritten (its run
    files removed, nothing else). A folder that cannot be written, or that another trainer holds (named: pid, host,
    start time), is an error now; temporary files of a writer that died are removed."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {out}: is a file, not a folder")
    _refuse_a_run_there(out, resume, overwrite)  # before locking (a refused command leaves nothing behind) ...
    lock = None
    if is_main:  # ... and again under the lock: the folder is only known while no other trainer writes there
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise type(exc)(f"--output {out}: cannot create the folder ({exc.strerror or exc})") from None
        check_writable(out)
        lock = OutputLock(out).acquire()
    try:
        _refuse_a_run_there(out, resume, overwrite)
        if not is_main:
            return None
        remove_stale_temps(out)
        if overwrite and not resume:
            for p in run_files(out):
                p.unlink()
            shutil.rmtree(out / "tb", ignore_errors=True)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return lock


def atomic_write(path: Path, write: Callable[[io.IOBase], None], mode: str = "wb") -> None:
    """Write through a temporary file in the same folder, flushed to disk, then renamed over ``path``: a kill
    at any moment leaves either the old file or the new one, never a broken one. The temporary file is created
    exclusively under an unpredictable name (``tempfile.mkstemp``): a file or link planted in the folder is never
    written through."""
    fd, tmp = exclusive_temp(path)
    try:
        with open(fd, mode, **({"newline": "", "encoding": "utf-8"} if "b" not in mode else {})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_link(src: Path, dst: Path) -> None:
    """``dst`` becomes the same file as ``src`` (a hard link; a copy where links are not supported), atomically,
    through a temporary name nobody can predict (``os.link`` refuses an existing name; the copy goes to a file
    created exclusively)."""
    tmp = new_temp_name(dst)
    try:
        os.link(src, tmp)
    except FileExistsError:
        return atomic_link(src, dst)  # 2**-32: another name
    except OSError:
        def copy(fh):
            with open(src, "rb") as source:
                shutil.copyfileobj(source, fh)
        atomic_write(dst, copy)
        return
    try:
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_if_unused(out: Path) -> None:
    """A run that failed before writing anything leaves no folder it created (only its lock and args.json)."""
    if not out.is_dir():
        return
    left = {p.name for p in out.iterdir()}
    if left <= {LOCK, ARGS_FILE}:
        for name in left:
            (out / name).unlink(missing_ok=True)
        out.rmdir()

