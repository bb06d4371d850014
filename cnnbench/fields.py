"""Values of the JSON files cnnbench writes and reads back (a plan, a bench report), each
checked for the type and range its writer gives: a file carried to another machine, or
edited by hand or by another tool, says which field is wrong in one line, where a bad
value would be coerced, end in a traceback, or compare as NaN. Each returns the value, or
raises ValueError naming the field (`name`: dotted, as the user finds it in the file) and
what it takes. Looking the field up is the caller's (a missing one: its KeyError)."""

from __future__ import annotations

import math
from typing import Any


def whole(value: Any, name: str, least: int) -> int:
    """An int (not a bool, a float or a string) of at least `least`."""
    if type(value) is not int or value < least:
        raise ValueError(f"{name} {value!r}: a whole number, at least {least}")
    return value


def number(value: Any, name: str, positive: bool, most: float | None = None) -> float:
    """A finite int or float, above 0 (`positive`) or 0 or more, at most `most`."""
    fine = type(value) in (int, float) and math.isfinite(value)
    if not fine or not (value > 0 if positive else value >= 0) or value > (most or math.inf):
        bound = "above 0" if positive else "0 or more"
        at_most = f", at most {most:g}" if most is not None else ""
        raise ValueError(f"{name} {value!r}: a number {bound}{at_most}")
    return float(value)


def text(value: Any, name: str) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} {value!r}: a non-empty string")
    return value


def flag(value: Any, name: str) -> bool:
    """true or false."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} {value!r}: true or false")
    return value


def mapping(value: Any, name: str) -> dict[str, Any]:
    """A JSON object (a copy)."""
    if not isinstance(value, dict):
        raise ValueError(f"{name} {value!r}: an object")
    return dict(value)


def sequence(value: Any, name: str) -> list:
    """A JSON array."""
    if not isinstance(value, list):
        raise ValueError(f"{name} {value!r}: a list")
    return value
