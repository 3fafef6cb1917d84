"""What one request to the web page may ask for (no web dependency: the CLI reads the defaults)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one request may ask for."""

    max_chars: int = 1000  # per text field
    max_tokens: int = 128  # word pieces of text + pair, [CLS]/[SEP] included
    max_methods: int = 5
    timeout: float = 60.0  # seconds for explain / perturb
    audit_timeout: float = 900.0  # seconds for the audit (runs once per server, then cached)
    audit_examples: int = 32  # size of the built-in audit sample
    max_flips: int = 10  # HotFlip budget

    @property
    def max_body(self) -> int:
        """Bytes of a request body: text and pair at 6 bytes a character (JSON's ``\\uXXXX``) + 4 KiB."""
        return 12 * self.max_chars + 4096
