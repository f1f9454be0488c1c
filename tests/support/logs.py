"""Log lines as the functions write them, captured for assertions."""

from __future__ import annotations

import logging

import orjson

from easysmart.observability import JsonFormatter


class LogLines(logging.Handler):
    """Formats each record as it is logged, on the logging thread, as the functions' stderr handler does."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(self.format(record)))
