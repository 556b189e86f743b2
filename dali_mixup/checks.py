"""Argument checks shared by every public entry point: each returns the value in its plain Python type or raises
an error that names the argument, what it must be and what it got (``TypeError`` for a wrong type, ``ValueError``
for a value out of range). NumPy integers and floats are accepted where a number is; ``bool`` is never a number.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence

__all__ = ["integer", "real", "probability", "flag", "one_of"]


def integer(name: str, value, low: Optional[int] = None, high: Optional[int] = None) -> int:
    """in: an integral number (int, NumPy integer) -> out: an int in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer in [{'-inf' if low is None else low}, "
                         f"{'inf' if high is None else high}], got {value}")
    return value


def real(name: str, value) -> float:
    """in: a finite real number (int, float, NumPy scalar) -> out: a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def probability(name: str, value) -> float:
    """in: a number in [0, 1] -> out: a float (anything else: a ValueError naming the argument)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def flag(name: str, value) -> bool:
    """in: True or False (a real bool: 1 and "yes" are refused) -> out: it."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def one_of(name: str, value, allowed: Sequence):
    """in: one of ``allowed`` -> out: it."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value
