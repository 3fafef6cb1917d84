"""The one exception type users catch: every bad input raises ``UnmaskError``."""


class UnmaskError(ValueError):
    """Bad input (text, label, model path, data file, parameter) with a message naming it."""
