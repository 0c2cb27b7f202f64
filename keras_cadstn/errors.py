"""Errors that name the file or frame at fault and what was expected."""


class DataError(ValueError):
    """Bad input data (file, frame or record); the message names it and says what was expected."""


class NoHandError(DataError):
    """A frame has no depth pixel inside the hand cube around the reference point."""


class CorruptShardError(DataError):
    """A TFRecord shard does not match its manifest (size/checksum) or cannot be read."""
