"""``argparse`` types that turn a bad command-line value into a plain message.

argparse prints ``medsort sort: error: argument --k: ...`` with the message these raise,
instead of the value reaching a library that fails far away (scikit-learn's "0 feature(s)"
for ``--k 0``). Every stage's ``cli.py`` uses them; they import nothing heavy.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path


def whole_number(minimum: int) -> Callable[[str], int]:
    """A type for integers of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = "whole number"
    return parse


def number_between(low: float, high: float | None = None, low_open: bool = False):  # noqa: ANN201
    """A type for finite floats in ``[low, high]`` (``(low, high]`` with ``low_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            bound = f"more than {low:g}" if low_open else f"at least {low:g}"
            upper = f" and at most {high:g}" if high is not None else ""
            raise argparse.ArgumentTypeError(f"must be {bound}{upper}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def existing_file(text: str) -> Path:
    """A path that must be an existing file (not a folder)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder, expected a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"file not found: {text}")
    return path


def existing_path(text: str) -> Path:
    """A path that must exist (file or folder)."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"not found: {text}")
    return path


def existing_folder(text: str) -> Path:
    """A path that must be an existing folder."""
    path = Path(text)
    if path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is a file, expected a folder")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"folder not found: {text}")
    return path


def folder_to_write(text: str) -> Path:
    """A folder that may not exist yet, but is not an existing file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, expected a folder")
    return path


def volume_mode(text: str) -> str:
    """``middle``, ``mip`` or ``axial:N`` with a whole N of at least 1."""
    if text in ("middle", "mip"):
        return text
    kind, _, step = text.partition(":")
    if kind == "axial" and step.isdigit() and int(step) >= 1:
        return text
    raise argparse.ArgumentTypeError(f"use middle, mip or axial:N (N >= 1), got {text!r}")
