"""Errors a user can act on. The CLI and the server turn these into one clear line / a 4xx,
never a traceback; anything else reaching the top is a bug."""


class BlinkgenError(Exception):
    """Base class: a problem the user can fix (bad input, missing model, bad data)."""


class UserInputError(BlinkgenError, ValueError):
    """An argument is out of range or malformed (unknown sampler, steps < 1, n too large...)."""


class ModelLoadError(BlinkgenError):
    """A model folder is missing, incomplete or corrupt."""


class DataError(BlinkgenError):
    """A dataset has nothing usable, or cannot be read at all."""
