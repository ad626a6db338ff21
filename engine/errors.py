"""Exceptions the engine raises, and how its log marks a warning; every message is written for an
analyst, not a developer."""

# Log lines starting with this are warnings (the Processing adapter shows them as such).
WARNING_PREFIX = "Warning: "


class EngineError(ValueError):
    """Bad input or a failed run; the message says what is wrong and what to do."""


class Cancelled(RuntimeError):
    """The caller asked to stop; outputs were removed."""
