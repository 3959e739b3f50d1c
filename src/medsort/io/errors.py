"""The one error readers raise: its message is the reason written to ``skipped.csv``."""


class ReadError(Exception):
    """A file could not be turned into images; the message says why, for skipped.csv."""
