"""Checking request bodies (the admin API's, maintenance windows, snoozes): every problem of a body at once, as a
422 naming each one's JSON path."""

from __future__ import annotations

from datetime import datetime
from typing import Iterable

from easysmart.errors import UnprocessableError
from easysmart.params import EARLIEST, LATEST, json_type_name


class BodyProblems:
    """Collects the problems of one body; `raise_if_any` answers them all."""

    def __init__(self, body: object, allowed: Iterable[str]) -> None:
        self.problems: list[tuple[str, str]] = []
        if not isinstance(body, dict):
            self.body: dict = {}
            self.add("$", "the body must be a JSON object")
            return
        self.body = body
        known = set(allowed)
        for name in body:
            if name not in known:
                self.add(f"$.{name}", f"unknown field; expected one of {', '.join(sorted(known))}")

    def add(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def string(self, name: str, max_length: int, required: bool = False, nullable: bool = False) -> str | None:
        """The field's text, trimmed; None when absent (or null where `nullable`)."""
        if name not in self.body:
            if required:
                self.add(f"$.{name}", "required")
            return None
        value = self.body[name]
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            self.add(f"$.{name}", f"must be a string, not {json_type_name(value)}")
            return None
        value = value.strip()
        if not value:
            self.add(f"$.{name}", "must not be empty")
        elif len(value) > max_length:
            self.add(f"$.{name}", f"longer than {max_length} characters")
        return value

    def boolean(self, name: str) -> bool | None:
        if name not in self.body:
            return None
        value = self.body[name]
        if not isinstance(value, bool):
            self.add(f"$.{name}", f"must be true or false, not {json_type_name(value)}")
            return None
        return value

    def integer(self, name: str, low: int, high: int) -> int | None:
        if name not in self.body:
            return None
        value = self.body[name]
        if not isinstance(value, int) or isinstance(value, bool):
            self.add(f"$.{name}", f"must be an integer, not {json_type_name(value)}")
            return None
        if not low <= value <= high:
            self.add(f"$.{name}", f"must be between {low} and {high}, not {value}")
            return None
        return value

    def time(self, name: str, required: bool = False) -> datetime | None:
        """An ISO-8601 time with its UTC offset (a naive time would be read in some zone the caller did not say),
        between EARLIEST and LATEST; None when absent or null."""
        value = self.body.get(name)
        if value is None:
            if required:
                self.add(f"$.{name}", "required")
            return None
        if not isinstance(value, str):
            self.add(f"$.{name}", f"must be an ISO-8601 time, not {json_type_name(value)}")
            return None
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            self.add(f"$.{name}", f"not an ISO-8601 time: {value[:64]!r}")
            return None
        if parsed.tzinfo is None:
            self.add(f"$.{name}", "must carry its UTC offset, e.g. 2026-12-02T02:00:00-03:00 or ...Z")
            return None
        if not EARLIEST <= parsed <= LATEST:
            self.add(f"$.{name}", f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
            return None
        return parsed

    def raise_if_any(self) -> None:
        if self.problems:
            raise UnprocessableError(
                "; ".join(f"{path}: {message}" for path, message in self.problems),
                paths=[path for path, _ in self.problems],
            )
