"""The one error readers raise: its message is the reason written to ``skipped.csv``."""

from __future__ import annotations

import re
from pathlib import Path

MAX_REASON = 300
"""Longest decoder message kept in a reason."""
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class ReadError(Exception):
    """A file could not be turned into images; the message says why, for skipped.csv."""


def error_text(error: BaseException, path: Path | None = None) -> str:
    """A decoder's exception as one short line for a skip reason.

    Whitespace is collapsed, object addresses (``<... object at 0x7f...>``, different in
    every run) are dropped so two runs write the same ``skipped.csv``, and the file is
    named without the folders above it (an ``OSError``'s file; ``path`` where the
    message quotes it), as ``skipped.csv`` already gives its place in the input folder.
    """
    if isinstance(error, OSError) and error.strerror:
        name = Path(str(error.filename)).name if error.filename else ""
        return f"{error.strerror} {name}".strip()
    text = _ADDRESS.sub("", " ".join(str(error).split()))
    if path is not None:
        text = text.replace(str(path), path.name)
    return (text or type(error).__name__)[:MAX_REASON]
