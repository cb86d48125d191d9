"""The two errors a user can cause, each with a message meant for them (no heavy imports here:
commands catch these without loading torch)."""


class ModelLoadError(RuntimeError):
    """A weights folder that cannot be loaded; the message names the file and the problem."""


class ImageReadError(ValueError):
    """An upload that cannot be analyzed; the message is meant for the user."""


class DataError(ValueError):
    """A data folder that is not what a command needs (no NORMAL/ and PNEUMONIA/, another split)."""
