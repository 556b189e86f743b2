"""A loader's resume state: where the stream of batches stands (``Position``), and a saved state checked field by
field before anything changes (``check``).

state_dict layout: {"format", "identity", "epoch", "step", "in_epoch", "mixup_enabled", "dali"}. Format 3: an
epoch reads a permutation of the whole dataset keyed by (seed, epoch) (format 2 read a fixed order through DALI's
shuffle buffer).
"""

from __future__ import annotations

import json
from typing import Callable, NamedTuple, Optional

import numpy as np

from .checks import integer

__all__ = ["FORMAT", "Position", "check", "plain"]

FORMAT = 3


class Position(NamedTuple):
    """Where the stream of batches handed out stands: what ``state_dict`` saves (``dali``: the pipeline's DALI
    checkpoint at that point, or None where none was taken)."""

    epoch: int
    step: int
    in_epoch: bool
    mixup_enabled: bool
    dali: Optional[str]


def plain(value):
    """A JSON round trip: tuples become lists, so a state saved with torch.save or json compares equal."""
    return json.loads(json.dumps(value))


def as_dict(position: Position, identity: dict) -> dict:
    return {"format": FORMAT, "identity": identity, "epoch": position.epoch, "step": position.step,
            "in_epoch": position.in_epoch, "mixup_enabled": position.mixup_enabled, "dali": position.dali}


def check(state, identity: dict, batches: Callable[[int], int]) -> Position:
    """in: a ``state_dict``, the loader's identity, its batches per epoch -> out: the state's position; every field
    checked first, an error naming the field (nothing is changed here)."""
    if not isinstance(state, dict):
        raise TypeError(f"state_dict must be a dict from DaliMixupLoader.state_dict(), got {type(state).__name__}")
    if not state:
        raise ValueError("state_dict is empty: expected a dict from DaliMixupLoader.state_dict()")
    if state.get("format") != FORMAT:
        found = f"format {state['format']!r}" if "format" in state else "no 'format' key (an older dali-mixup)"
        raise ValueError(f"state_dict has {found}; this loader reads format {FORMAT}: a state saved by "
                         "another version cannot be resumed (start the epoch afresh)")
    missing = {"identity", "epoch", "step", "in_epoch", "mixup_enabled", "dali"} - set(state)
    if missing:
        raise ValueError(f"state_dict lacks {sorted(missing)}: not a complete DaliMixupLoader state")
    _same_identity(state["identity"], identity)
    epoch = integer("state_dict['epoch']", state["epoch"], 0)
    step = integer("state_dict['step']", state["step"], 0, batches(epoch))
    for key in ("in_epoch", "mixup_enabled"):
        if not isinstance(state[key], (bool, np.bool_)):
            raise TypeError(f"state_dict[{key!r}] must be True or False, got {state[key]!r}")
    in_epoch = bool(state["in_epoch"])
    if in_epoch and not (isinstance(state["dali"], (bytes, str)) and state["dali"]):
        raise ValueError(f"state_dict['dali'] must be the DALI checkpoint (non-empty bytes) of a state saved "
                         f"mid-epoch, got {type(state['dali']).__name__}")
    return Position(epoch, step, in_epoch, bool(state["mixup_enabled"]), state["dali"] if in_epoch else None)


def _same_identity(saved, current: dict) -> None:
    try:
        saved = plain(saved)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"state_dict['identity'] is not a saved stream identity ({exc})") from None
    if not isinstance(saved, dict):
        raise ValueError(f"state_dict['identity'] must be a dict, got {type(saved).__name__}")
    for key in list(current) + [k for k in saved if k not in current]:  # the plainest difference first
        if saved.get(key) != current.get(key):
            raise ValueError(f"state_dict was saved over another stream: {key} was {saved.get(key)!r}, this "
                             f"loader has {current.get(key)!r}")
