"""A run's own arguments, saved with it and reused when it is resumed (timm writes args.yaml; we write
``args.json`` beside the checkpoints, and every checkpoint holds them too).

``--resume`` continues the run as it was started: every flag the resume command line leaves out takes the run's
saved value, so ``dali-mixup train --output DIR --resume`` is the whole command. A flag given again with the
same value is fine. A flag given with another value is refused, every such flag listed by name with both values,
unless it is one that may change between sessions without changing the run (``MAY_CHANGE``: how long it trains,
where its output and data live, how many threads, checkpoints kept, the progress bar). The refusal is chosen
over "the saved ones win" so that nothing the user typed is silently ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

from .output import ARGS_FILE

__all__ = ["ARGS_FILE", "MAY_CHANGE", "write_args", "resumed_args"]

#: Flags (by dest) that a resumed session may set to a new value: they do not change which batches the run draws
#: or how it learns from them. --data-dir and --val-data may move (the loader's sample-list fingerprint still checks
#: that the data are the same).
MAY_CHANGE = frozenset({"epochs", "output", "resume", "overwrite", "no_progress", "debug", "keep_checkpoints",
                        "threads", "data", "val_data"})
_NOT_SAVED = frozenset({"given", "func", "resume", "overwrite", "command", "data_dir"})  # never taken from the run


def _norm(value):
    """Tuples and lists compare equal (JSON and torch.save keep them differently)."""
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value


def write_args(out: Path, saved: dict, write_text) -> None:
    """Write ``saved`` (``checkpoint.plain_args``) to ``out/args.json`` with ``write_text(path, text)`` (atomic)."""
    write_text(out / ARGS_FILE, json.dumps(saved, indent=2, sort_keys=True) + "\n")


def _shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return "its default" if value is None else str(value)


def resumed_args(args, saved: dict, source: str):
    """in: the parsed flags of a resume command (``args.given``: {dest: flag as typed} of the flags it gave),
    the run's saved flags, where they were read (for messages) -> out: ``args`` with every flag not given set to
    the run's value. A given flag whose value differs from the run's, outside ``MAY_CHANGE``, is an error that
    lists every such flag."""
    given: Dict[str, str] = dict(getattr(args, "given", None) or {})
    differing: List[str] = []
    for dest, value in saved.items():
        if dest in _NOT_SAVED or dest in MAY_CHANGE and dest in given:
            continue
        if dest in given:
            if _norm(getattr(args, dest, None)) != _norm(value):
                differing.append(f"{given[dest]} {_shown(getattr(args, dest, None))} (the run has {_shown(value)})")
        elif hasattr(args, dest) or dest.endswith("_loader_options"):
            setattr(args, dest, value)
    if differing:
        raise ValueError(f"--resume: {len(differing)} flag(s) differ from the run's own (saved in {source}): "
                         f"{'; '.join(differing)}. A resumed run keeps its flags: leave these out (the command "
                         f"needs only --output and --resume), or start a new run (another --output, or --overwrite)")
    return args
