"""Exceptions the engine raises; their messages are written for an analyst, not a developer."""


class EngineError(ValueError):
    """Bad input or a failed run; the message says what is wrong and what to do."""


class Cancelled(RuntimeError):
    """The caller asked to stop; outputs were removed."""
