"""Checkpoints: what one holds (``checkpoint_state``), writing it atomically beside the last N and the best
(``save_checkpoint``), reading one without running code (``load_checkpoint``), and continuing from it
(``check_resumable``, ``restore``)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Optional

import torch

from .build import Trainer
from .output import BEST, LAST, NUMBERED, atomic_link, atomic_write
from .processes import all_gather


def save_checkpoint(state: dict, out: Path, *, epoch: int, keep: int, is_best: bool) -> Path:
    """in: a checkpoint dict, the output folder, the epoch, how many numbered checkpoints to keep, whether this
    epoch is the best so far -> out: the path of ``checkpoint-NNN.pt``. Written atomically; checkpoint-last.pt
    (and checkpoint-best.pt when best) point at it; numbered checkpoints up to this epoch beyond the newest
    ``keep`` are deleted (later-numbered ones, left by an abandoned continuation, are overwritten in turn)."""
    path = out / f"checkpoint-{epoch:03d}.pt"
    atomic_write(path, lambda fh: torch.save(state, fh))
    atomic_link(path, out / LAST)
    if is_best:
        atomic_link(path, out / BEST)
    numbered = sorted((int(m.group(1)), p) for p in out.iterdir() if (m := NUMBERED.match(p.name)))
    older = [p for n, p in numbered if n <= epoch]
    for p in older[:max(0, len(older) - keep)]:
        p.unlink()
    return path


#: What a checkpoint holds (``checkpoint_state`` writes them; ``load_checkpoint`` refuses one that lacks any).
CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "scheduler", "scaler", "loader", "num_classes", "model_name",
                   "history", "best", "wall_time_s", "partial", "args")


def load_checkpoint(path: Path) -> dict:
    """in: a checkpoint path -> out: its dict, tensors on the CPU. Loaded with ``torch.load(weights_only=True)``:
    tensors and plain data only, so a crafted file cannot run code; one that needs more is refused, naming it.
    A file that is not a checkpoint, or one that lacks what ``restore`` reads, is an error naming what is
    missing."""
    if not path.is_file():
        raise FileNotFoundError(f"--resume {path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"--resume {path}: refused: it holds more than tensors and plain data, and loading it "
                         f"could run code ({_unsafe_part(exc)}); dali-mixup loads checkpoints with "
                         "torch.load(weights_only=True): resume from a checkpoint that dali-mixup train wrote") \
            from None
    except Exception as exc:
        raise ValueError(f"--resume {path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict):
        raise ValueError(f"--resume {path}: not a dali-mixup train checkpoint (it holds a {type(ckpt).__name__}, "
                         "not a dict)")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        has = ", ".join(repr(k) for k in ckpt) or "nothing"
        raise ValueError(f"--resume {path}: not a complete dali-mixup train checkpoint: it lacks "
                         f"{', '.join(repr(k) for k in missing)} (it has {has})")
    return ckpt


def _unsafe_part(exc: Exception) -> str:
    """The line of torch's weights-only refusal that names what was refused (e.g. the global ``posix.system``)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (named or lines or ["refused by torch.load(weights_only=True)"])[0]


def check_resumable(ckpt: dict, path: Path, *, model: str, num_classes: int) -> None:
    """A checkpoint of another model or class count is an error naming both."""
    if ckpt["num_classes"] != num_classes:
        raise ValueError(f"--resume {path}: checkpoint has num_classes={ckpt['num_classes']}, the data has "
                         f"{num_classes}")
    if ckpt["model_name"] != model:
        raise ValueError(f"--resume {path}: checkpoint is a {ckpt['model_name']}, not {model}")


def checkpoint_state(trainer: Trainer, epoch: int, args, wall_time_s: float, partial: Optional[dict] = None) -> dict:
    """in: a Trainer after ``record`` (or stopped mid-epoch: ``epoch`` the last whole one, -1 for none, and
    ``partial`` the epoch so far) -> out: the checkpoint dict (every rank's loader state gathered: all ranks must
    call this). Plain data and tensors only: ``torch.load(weights_only=True)`` reads it."""
    t = trainer
    loaders = all_gather(t.train_loader.state_dict(), t.ctx.world)
    return {"partial": partial, "epoch": epoch, "model": t.model.state_dict(), "optimizer": t.optimizer.state_dict(),
            "scheduler": t.scheduler.state_dict(), "scaler": t.scaler.state_dict(), "loader": loaders,
            "num_classes": t.num_classes, "model_name": args.model, "history": t.history, "best": t.best,
            "wall_time_s": wall_time_s, "args": plain_args(args)}


def plain_args(args) -> dict:
    """in: the parsed flags -> out: those that are plain data (str, int, float, bool, None, and lists, tuples and
    dicts of them), as they are saved with a run (checkpoints, args.json; ``torch.load(weights_only=True)`` and
    JSON read them back)."""
    def plain(v):
        if v is None or isinstance(v, (str, bool, int, float)):
            return type(v) in (str, bool, int, float, type(None))  # not numpy scalars, not str/int subclasses
        if isinstance(v, (list, tuple)):
            return all(plain(x) for x in v)
        if isinstance(v, dict):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        return False
    return {k: v for k, v in vars(args).items() if plain(v) and k != "given"}


def restore(trainer: Trainer, ckpt: dict) -> None:
    """in: a Trainer fresh from ``build``, a checkpoint -> out: the Trainer where the checkpoint left off
    (weights, optimiser, schedule, scaler, this rank's loader stream, history, best, wall time)."""
    trainer.model.load_state_dict(ckpt["model"])
    trainer.optimizer.load_state_dict(ckpt["optimizer"])
    trainer.scheduler.load_state_dict(ckpt["scheduler"])
    trainer.scaler.load_state_dict(ckpt["scaler"])
    states = ckpt["loader"]  # one state per rank
    if len(states) != trainer.ctx.world:
        raise ValueError(f"--resume: the checkpoint was written by {len(states)} process(es), this run has "
                         f"{trainer.ctx.world}; resume with the same number of processes")
    trainer.train_loader.load_state_dict(states[trainer.ctx.rank])
    trainer.history = list(ckpt["history"])
    trainer.best = ckpt["best"]
    trainer.wall_time_s = float(ckpt["wall_time_s"])
    trainer.start_epoch = ckpt["epoch"] + 1
    trainer.partial = ckpt["partial"]  # stopped mid-epoch: the epoch so far (its loader state is mid-epoch)

