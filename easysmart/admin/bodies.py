"""Checking admin request bodies: every problem of a body at once, as a 422 naming each one's JSON path."""

from __future__ import annotations

from typing import Iterable

from easysmart.errors import UnprocessableError
from easysmart.params import json_type_name


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

    def raise_if_any(self) -> None:
        if self.problems:
            raise UnprocessableError(
                "; ".join(f"{path}: {message}" for path, message in self.problems),
                paths=[path for path, _ in self.problems],
            )
