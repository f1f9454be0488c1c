"""PostgreSQL COPY text format: how one value is written in a COPY line (tab-separated, \\N for null)."""

from __future__ import annotations

import re

NULL = "\\N"
_NEEDS_ESCAPE = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(value: str | None) -> str:
    if value is None:
        return NULL
    return value.translate(_COPY_ESCAPES) if _NEEDS_ESCAPE.search(value) else value


def copy_number(value: float | None) -> str:
    return NULL if value is None else repr(value)


def copy_numbers(values: tuple[float | None, ...]) -> str:
    """Several float-or-None columns, tab-separated."""
    return "\t".join([NULL if value is None else repr(value) for value in values])
