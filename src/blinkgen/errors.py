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


class InputFileError(BlinkgenError, ValueError):
    """A file (or upload) the user gave cannot be read as what it should be: text that is not
    UTF-8/UTF-16, an image that is unreadable, truncated, too large or a decompression bomb."""


class ImageReadError(InputFileError):
    """An image cannot be used. `reason` is a short stable string (the dataset loader's skip
    reason, e.g. "too large (> 8192 px)"); the message says which file and why."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class OutputExistsError(UserInputError):
    """An output file already exists and the command was not told to replace it (--overwrite)."""
