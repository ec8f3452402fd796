"""How distpool reads a yes or a no from text: environment variables, URL options."""

from __future__ import annotations

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_flag(text: str) -> bool | None:
    """``text`` as a yes or a no (1/0, true/false, yes/no, on/off, any case, an empty text a
    no); None if it is neither."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return None
