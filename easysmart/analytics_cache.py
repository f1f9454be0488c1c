"""The Redis cache of history answers' materialised part (plain-PostgreSQL mode).

An aggregate history is the materialised buckets below the aggregate's watermark followed by the
live ones above it. Materialised rows change only when a refresh re-materialises buckets below the
old watermark (late data, which the aggregate log records) or rebuilds the daily buckets of a new
zone; that refresh bumps the cache generation (aggregate_settings, in its own transaction). So the
materialised part of a page is kept, as the JSON text of its rows, under a key of the tenant and
what selects the rows (buckets, not times: a dashboard asking up to "now" hits it all hour), with
the generation it was read in; a request uses it only when the generation it reads from the database
is the same and the sensors its rows name are unchanged, and reads the live part every time. A
watermark that moves on changes no row below the one an entry was made with, so the entry stays
good: the rows between that watermark and the new one are read with the live part.

Redis errors never fail a request: the answer comes from the database, and the cache is left alone
for a while (ANALYTICS_CACHE_RETRY_AFTER_S) so a Redis that is down costs one timeout, not one per request.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import typing
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

import orjson
import redis

from easysmart.config import AnalyticsCacheSettings

logger = logging.getLogger(__name__)

KEY_PREFIX = "esm:analytics:history:v1"  # v: of the entry format below


@dataclass(frozen=True)
class MaterialisedPart:
    """A page's rows below `watermark` as they were in cache generation `generation`: their JSON objects joined
    by commas, how many there were (of at most the page's limit + 1), the (time text, sensor id) of the last one
    within the page, and the sensors they name as [id, uuid, name, kind, unit] (a renamed sensor's rows are
    read again)."""

    generation: str
    watermark: datetime
    rows_json: bytes
    count: int
    last: tuple[str, int] | None
    sensors: list[list]

    def encode(self) -> bytes:
        header = [self.generation, self.watermark.isoformat(), self.count, self.last, self.sensors]
        return orjson.dumps(header) + b"\n" + self.rows_json  # orjson writes no raw newline

    @classmethod
    def decode(cls, raw: bytes) -> MaterialisedPart:
        header, rows_json = raw.split(b"\n", 1)
        generation, watermark, count, last, sensors = orjson.loads(header)
        return cls(
            generation, datetime.fromisoformat(watermark), rows_json, count, tuple(last) if last else None, sensors
        )


def cache_key(tenant_id: object, *selection: object) -> str:
    """The key of a tenant's materialised part: the tenant in clear (an operator can see whose entries there
    are), what selects the rows hashed. The generation is in the entry, checked on each read."""
    digest = hashlib.sha256(repr(selection).encode()).hexdigest()[:40]
    return f"{KEY_PREFIX}:{tenant_id}:{digest}"


class HistoryCache:
    def __init__(
        self,
        client: redis.Redis,
        settings: AnalyticsCacheSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.settings = settings
        self.clock = clock
        self._lock = threading.Lock()
        self._unused_until = 0.0  # after a Redis error, by the clock

    def get(self, key: str) -> MaterialisedPart | None:
        if not self._usable():
            return None
        try:
            raw = self.client.get(key)
        except redis.RedisError as error:
            self._failed(error)
            return None
        if raw is None:
            return None
        try:
            return MaterialisedPart.decode(typing.cast(bytes, raw))
        except (ValueError, TypeError):
            logger.warning("analytics cache entry %s is not readable; reading the database", key)
            return None

    def put(self, key: str, part: MaterialisedPart) -> None:
        if not self._usable():
            return
        raw = part.encode()
        if len(raw) > self.settings.analytics_cache_max_entry_bytes:
            return
        try:
            self.client.set(key, raw, ex=self.settings.analytics_cache_ttl_s)
        except redis.RedisError as error:
            self._failed(error)

    def _usable(self) -> bool:
        with self._lock:
            return self.clock() >= self._unused_until

    def _failed(self, error: redis.RedisError) -> None:
        with self._lock:
            self._unused_until = self.clock() + self.settings.analytics_cache_retry_after_s
        logger.warning(
            "analytics cache unavailable, answering from the database for %.0f s: %s",
            self.settings.analytics_cache_retry_after_s,
            error,
        )
