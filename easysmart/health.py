"""Real checks of the backing services, with latencies, for /api/v1/health/detailed."""

from __future__ import annotations

import threading
import time
from typing import Callable

import redis

from easysmart.clock import MonotonicClock
from easysmart.db import Database
from easysmart.errors import UnavailableError
from easysmart.messaging import KafkaProbe
from easysmart.storage import BlobStore

# An answer is reused this long: the checks make a round trip to every backend, and whoever polls the
# endpoint (a platform's probe, an operator, anyone who reaches it) must not multiply that load.
CACHE_S = 5.0


Check = Callable[[], float]  # the latency in seconds, or UnavailableError / RedisError


class HealthChecks:
    def __init__(
        self, checks: dict[str, Check], cache_s: float = CACHE_S, monotonic: MonotonicClock = time.monotonic
    ) -> None:
        self._checks = checks
        self.cache_s = cache_s
        self.monotonic = monotonic
        self._cached: tuple[float, dict] | None = None
        self._lock = threading.Lock()

    @classmethod
    def of_backends(cls, db: Database, redis_client: redis.Redis, blobs: BlobStore, kafka: KafkaProbe) -> HealthChecks:
        return cls(
            {
                "database": lambda: cls._timed(lambda: cls._select_one(db)),
                "redis": lambda: cls._timed(redis_client.ping),
                "object_store": blobs.ping,
                "kafka": kafka.ping,
            }
        )

    @staticmethod
    def _timed(call: Callable[[], object]) -> float:
        started = time.perf_counter()
        call()
        return time.perf_counter() - started

    @staticmethod
    def _select_one(db: Database) -> None:
        with db.transaction() as cursor:
            cursor.execute("SELECT 1")

    def run(self) -> dict:
        """Every check's answer, at most cache_s old; one caller at a time runs the checks."""
        with self._lock:
            if self._cached is not None and self.monotonic() - self._cached[0] < self.cache_s:
                return self._cached[1]
            answer = self._run_checks()
            self._cached = (self.monotonic(), answer)
            return answer

    def _run_checks(self) -> dict:
        checks = {}
        for name, check in self._checks.items():
            try:
                latency = check()
                checks[name] = {"status": "ok", "latency_ms": round(latency * 1000, 2)}
            except (UnavailableError, redis.RedisError) as error:
                checks[name] = {"status": "down", "error": str(error)[:300]}
        status = "ok" if all(c["status"] == "ok" for c in checks.values()) else "degraded"
        return {"status": status, "checks": checks}
