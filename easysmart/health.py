"""Real checks of the backing services, with latencies, for /api/v1/health/detailed."""
from __future__ import annotations

import time
from typing import Callable

import redis

from easysmart.db import Database
from easysmart.errors import UnavailableError
from easysmart.messaging import KafkaProbe
from easysmart.storage import BlobStore


class HealthChecks:
    def __init__(self, db: Database, redis_client: redis.Redis, blobs: BlobStore, kafka: KafkaProbe) -> None:
        self._checks: dict[str, Callable[[], float]] = {
            "database": lambda: self._timed(lambda: self._select_one(db)),
            "redis": lambda: self._timed(redis_client.ping),
            "object_store": blobs.ping,
            "kafka": kafka.ping,
        }

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
        checks = {}
        for name, check in self._checks.items():
            try:
                latency = check()
                checks[name] = {"status": "ok", "latency_ms": round(latency * 1000, 2)}
            except (UnavailableError, redis.RedisError) as error:
                checks[name] = {"status": "down", "error": str(error)[:300]}
        status = "ok" if all(c["status"] == "ok" for c in checks.values()) else "degraded"
        return {"status": status, "checks": checks}
