"""Snowflake SQL literals and identifiers, as the emulator's own statements read them."""

from __future__ import annotations

from typing import Any


def parse_literal(text: str) -> Any:
    """``'it''s'`` → ``it's``, ``TRUE`` → True, ``12`` → 12, ``1.5`` → 1.5, else the text."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    upper = text.upper()
    if upper in ("TRUE", "FALSE"):
        return upper == "TRUE"
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def alias(name: str | None) -> str | None:
    """A column alias as Snowflake names it: unquoted upper-cased, quoted verbatim."""
    if not name:
        return None
    return name[1:-1] if name.startswith('"') else name.upper()
