"""What a config value may be: the predicates the checks (experiments/checks.py) and the regularisers'
definition (experiments/regularisers.py) are made of."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any


def is_number(value: Any) -> bool:
    """A real, finite number: inf and nan pass Python's comparisons in surprising ways and cannot train."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def is_whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def non_negative(value: Any) -> bool:
    return is_number(value) and value >= 0


def positive(value: Any) -> bool:
    return is_number(value) and value > 0


def whole_non_negative(value: Any) -> bool:
    return is_whole(value) and value >= 0


def fraction(value: Any) -> bool:
    return is_number(value) and 0 < value < 1


def rate(value: Any) -> bool:
    """A share that may be 0 but never all: a dropout rate, a zoom."""
    return is_number(value) and 0 <= value < 1


def one_of(*allowed: Any) -> Callable[[Any], bool]:
    return lambda value: value in allowed
