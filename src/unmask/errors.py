"""The one exception type users catch: every bad input raises ``UnmaskError``; warnings are ``UnmaskWarning``."""
import warnings


class UnmaskError(ValueError):
    """Bad input (text, label, model path, data file, parameter) with a message naming it."""


class UnmaskWarning(UserWarning):
    """Input that unmask repairs and reports (e.g. over-long text, truncated); shown as one line."""


def _format_warning(message, category, filename, lineno, line=None, _default=warnings.formatwarning):
    """``unmask: warning: <message>`` for ``UnmaskWarning`` (no file, line number or source line); any
    other warning keeps Python's format."""
    if isinstance(category, type) and issubclass(category, UnmaskWarning):
        return f"unmask: warning: {message}\n"
    return _default(message, category, filename, lineno, line)


if not getattr(warnings.formatwarning, "_unmask", False):
    _format_warning._unmask = True
    warnings.formatwarning = _format_warning
