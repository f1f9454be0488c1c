"""A clock tests set, for the services that take one (easysmart.clock): time moves when the test says so."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone


class SetClock:
    """Calling it gives `now` (aware UTC); monotonic() gives the same moment in seconds; advance() moves both on."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.now.timestamp()

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
