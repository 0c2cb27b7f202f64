import numbers

"""One error hierarchy: every failure the library reports on purpose is a ``CadstnError``.

The ``cadstn`` command catches the base class (and OSError) and prints one line; the subclasses
also derive from the built-in type a Python user would expect (ValueError, RuntimeError).
"""


class CadstnError(Exception):
    """Base of the errors this library raises on purpose; the message names what is wrong."""


class DataError(CadstnError, ValueError):
    """Bad input data (file, frame or record); the message names it and says what was expected."""


class ConfigError(CadstnError, ValueError):
    """A setting that cannot work (a stage without its prerequisites, a size that is not allowed)."""


class NoHandError(DataError):
    """A frame has no depth pixel inside the hand cube around the reference point."""


class CorruptShardError(DataError):
    """A TFRecord shard does not match its manifest (size/checksum) or cannot be read."""


class ParityError(CadstnError, RuntimeError):
    """An exported artifact's outputs differ from the Keras model's beyond the tolerance."""


class TrainingError(CadstnError, RuntimeError):
    """A training stage could not train the steps it was asked for (no data, NaN loss, ...)."""


def is_positive_int(value) -> bool:
    """Whether ``value`` is an integer >= 1 (a Python or NumPy int, not a bool): what pixel steps,
    ranks and counts given as settings must be."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and bool(value >= 1)
