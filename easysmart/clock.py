"""Injected time: where the time decides what happens, a service takes a clock, so tests set the time instead of
sleeping. The defaults read the real clock."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

# Now, as an aware UTC datetime: token lifetimes, login locks.
Clock = Callable[[], datetime]
# Seconds that only ever grow, for intervals (how long a pooled connection has been idle).
MonotonicClock = Callable[[], float]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
