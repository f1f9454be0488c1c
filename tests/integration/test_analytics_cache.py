"""The Redis cache of history answers (easysmart.analytics_cache) against the real database and Redis.

Every answer is compared with the same service without a cache: the cache may change how fast an
answer comes, never what it says.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest
import redis
from prometheus_client import REGISTRY

from easysmart import aggregates
from easysmart.aggregates import PlainAggregates
from easysmart.analytics import AnalyticsService
from easysmart.analytics_cache import KEY_PREFIX, HistoryCache
from easysmart.config import AggregateSettings, AnalyticsCacheSettings
from easysmart.errors import NotFoundError
from easysmart.identity import Principal

ZONE = "America/Sao_Paulo"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def plain_mode(database):
    with database.transaction() as cursor:
        cursor.execute("SELECT mode FROM schema_migrations ORDER BY version LIMIT 1")
        if cursor.fetchone()[0] != "postgres":
            pytest.skip("the cache is of the plain-PostgreSQL mode")


class Freezer:
    """A tenant's equipment with two sensors, the user who reads it, and the readings stored for it."""

    def __init__(self, database, make_account) -> None:
        self.database = database
        account = make_account("user")
        self.user = Principal(account_id=account.account_id, tenant_id=account.tenant_id, kind="user")
        self.uuid = str(uuid.uuid4())
        with database.transaction() as cursor:
            cursor.execute(
                "INSERT INTO equipment (tenant_id, uuid, name) VALUES (%s, %s, 'cache') RETURNING id",
                (account.tenant_id, self.uuid),
            )
            self.id = cursor.fetchone()[0]
            self.sensors = []
            for kind in ("temperature", "door"):
                cursor.execute(
                    "INSERT INTO sensors (tenant_id, equipment_id, uuid, name, kind, unit)"
                    " VALUES (%s, %s, %s, %s, %s, '') RETURNING id",
                    (account.tenant_id, self.id, str(uuid.uuid4()), f"{kind} sensor", kind),
                )
                self.sensors.append(cursor.fetchone()[0])

    def store(self, moments: list[datetime], value: float) -> None:
        """What process does for a batch: the rows and, in the same transaction, their time range."""
        with self.database.transaction() as cursor:
            cursor.execute(
                "SELECT esm_ensure_telemetry_partition(d::date) FROM generate_series(%s::date, %s::date,"
                " interval '1 day') d",
                (min(moments), max(moments)),
            )
            cursor.executemany(
                "INSERT INTO telemetry_data (sensor_id, equipment_id, ts, value) VALUES (%s, %s, %s, %s)",
                [(sensor, self.id, moment, value) for moment in moments for sensor in self.sensors],
            )
            cursor.execute("INSERT INTO aggregate_touched (lo, hi) VALUES (%s, %s)", (min(moments), max(moments)))

    def remove(self) -> None:
        with self.database.transaction() as cursor:
            for table in ("telemetry_data", "telemetry_hourly_mat", "telemetry_daily_mat"):
                cursor.execute(f"DELETE FROM {table} WHERE equipment_id = %s", (self.id,))
            cursor.execute("DELETE FROM sensors WHERE equipment_id = %s", (self.id,))
            cursor.execute("DELETE FROM equipment WHERE id = %s", (self.id,))


@pytest.fixture
def freezers(database, make_account, plain_mode):
    made: list[Freezer] = []

    def make() -> Freezer:
        made.append(Freezer(database, make_account))
        return made[-1]

    yield make
    for freezer in made:
        freezer.remove()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cached(database, redis_client, clock) -> AnalyticsService:
    return AnalyticsService(
        database,
        AggregateSettings(aggregate_timezone=ZONE),
        cache=HistoryCache(redis_client, AnalyticsCacheSettings(analytics_cache_retry_after_s=30), clock),
    )


@pytest.fixture
def uncached(database) -> AnalyticsService:
    return AnalyticsService(database, AggregateSettings(aggregate_timezone=ZONE))


def refresh(database) -> None:
    aggregates.refresh(database, ZONE, PlainAggregates())


def history(service: AnalyticsService, freezer: Freezer, now: datetime, **args: str) -> dict:
    """The answer as the client reads it."""
    window = {"period": "hour", "start_date": (now - timedelta(hours=12)).isoformat(), **args}
    return orjson.loads(orjson.dumps(service.equipment_history(freezer.user, freezer.uuid, window, now=now)))


def cache_keys(redis_client, freezer: Freezer) -> list[bytes]:
    return list(redis_client.scan_iter(f"{KEY_PREFIX}:{freezer.user.tenant_id}:*"))


def samples(answer: dict) -> dict[str, int]:
    return {row["time"]: row["sample_count"] for row in answer["data"][::2]}


@pytest.fixture
def past(freezers, database) -> tuple[Freezer, datetime]:
    """A freezer with readings 5 and 4 hours ago, materialised; the current time."""
    freezer = freezers()
    now = datetime.now(timezone.utc)
    hour = now.replace(minute=0, second=0, microsecond=0)
    freezer.store([hour - timedelta(hours=5, minutes=-minute) for minute in range(3)], 1.0)
    freezer.store([hour - timedelta(hours=4, minutes=-minute) for minute in range(2)], 2.0)
    refresh(database)
    return freezer, now


def lookups() -> dict[str, float]:
    return {
        outcome: REGISTRY.get_sample_value("esm_analytics_cache_lookups_total", {"outcome": outcome}) or 0.0
        for outcome in ("hit", "miss", "stale")
    }


def counted_since(before: dict[str, float]) -> dict[str, float]:
    return {outcome: count - before[outcome] for outcome, count in lookups().items()}


def test_a_second_answer_comes_from_the_cache_and_says_the_same(past, cached, uncached, redis_client, database):
    freezer, now = past
    before = lookups()
    first = history(cached, freezer, now)
    assert cache_keys(redis_client, freezer)
    # Changed behind the refresh's back: only an answer read from the cache still shows the old statistics.
    with database.transaction() as cursor:
        cursor.execute("UPDATE telemetry_hourly_mat SET sample_count = 99 WHERE equipment_id = %s", (freezer.id,))

    second = history(cached, freezer, now)

    assert second == first
    assert counted_since(before) == {"hit": 1, "miss": 1, "stale": 0}
    assert list(samples(first).values()) == [3, 2]
    assert list(samples(history(uncached, freezer, now)).values()) == [99, 99]


def test_late_data_in_the_equipment_s_hours_is_in_the_answer_after_the_refresh(past, cached, uncached, database):
    freezer, now = past
    history(cached, freezer, now)
    hour = now.replace(minute=0, second=0, microsecond=0)
    freezer.store([hour - timedelta(hours=5, minutes=-30)], 5.0)  # late: below the watermark

    refresh(database)

    before = lookups()
    answer = history(cached, freezer, now)
    assert counted_since(before) == {"hit": 0, "miss": 0, "stale": 1}
    assert list(samples(answer).values()) == [4, 2]
    assert answer == history(uncached, freezer, now)


def test_readings_of_the_current_hour_are_in_the_next_answer_without_a_refresh(past, cached, uncached):
    freezer, now = past
    history(cached, freezer, now)

    freezer.store([now - timedelta(seconds=1)], 7.0)

    later = now + timedelta(seconds=1)
    answer = history(cached, freezer, later)
    assert list(samples(answer).values()) == [3, 2, 1]
    assert answer == history(uncached, freezer, later)
    for service in (cached, cached):  # the days: a miss, then a hit
        days = history(service, freezer, later, period="day")
        assert sum(samples(days).values()) == 6 and days == history(uncached, freezer, later, period="day")


def test_an_entry_stays_good_when_the_watermark_moves_on(past, cached, uncached, database, redis_client):
    freezer, now = past
    hour = now.replace(minute=0, second=0, microsecond=0)
    # As if the last refresh had been 4 hours ago: the entry holds the hour 5 hours ago only.
    with database.transaction() as cursor:
        cursor.execute(
            "UPDATE aggregate_watermarks SET watermark = %s WHERE name = 'telemetry_hourly'",
            (hour - timedelta(hours=4),),
        )
        cursor.execute("SELECT value FROM aggregate_settings WHERE key = 'cache_generation'")
        generation = cursor.fetchone()
    history(cached, freezer, now)
    key = cache_keys(redis_client, freezer)

    # A refresh with nothing late only moves the watermark on (materialising the hour 4 hours ago): the
    # generation stays, and so does the entry, the rows from its watermark on read as they are now.
    refresh(database)

    with database.transaction() as cursor:
        cursor.execute("SELECT value FROM aggregate_settings WHERE key = 'cache_generation'")
        assert cursor.fetchone() == generation
        cursor.execute("SELECT watermark FROM aggregate_watermarks WHERE name = 'telemetry_hourly'")
        assert cursor.fetchone()[0] == hour
    assert history(cached, freezer, now) == history(uncached, freezer, now)
    with database.transaction() as cursor:
        cursor.execute("UPDATE telemetry_hourly_mat SET sample_count = 99 WHERE equipment_id = %s", (freezer.id,))
    assert list(samples(history(cached, freezer, now)).values()) == [3, 99]  # the first from the entry
    assert cache_keys(redis_client, freezer) == key


def test_pages_through_cached_and_live_rows_like_the_database(past, cached, uncached):
    freezer, now = past
    freezer.store([now - timedelta(seconds=1)], 7.0)
    later = now + timedelta(seconds=1)

    def pages(service: AnalyticsService) -> list[dict]:
        answers, cursor = [], None
        while True:
            answers.append(history(service, freezer, later, limit="3", **({"cursor": cursor} if cursor else {})))
            cursor = answers[-1]["next_cursor"]
            if cursor is None:
                return answers

    missed, hit, database = pages(cached), pages(cached), pages(uncached)

    assert missed == hit == database
    assert [len(page["data"]) for page in database] == [3, 3]


def test_a_renamed_sensor_is_named_anew_in_cached_hours(past, cached, database):
    freezer, now = past
    history(cached, freezer, now)
    with database.transaction() as cursor:
        cursor.execute("UPDATE sensors SET name = 'renamed' WHERE id = %s", (freezer.sensors[0],))

    answer = history(cached, freezer, now)

    assert {row["sensor_name"] for row in answer["data"]} == {"renamed", "door sensor"}


def test_tenants_are_apart(past, freezers, cached, database, redis_client):
    freezer, now = past
    other = freezers()
    history(cached, freezer, now)

    with pytest.raises(NotFoundError):
        cached.equipment_history(other.user, freezer.uuid, {"period": "hour"}, now=now)
    # The same selection in another tenant (its own equipment) has a key of its own.
    assert history(cached, other, now)["data"] == []
    assert cache_keys(redis_client, other) and set(cache_keys(redis_client, other)).isdisjoint(
        cache_keys(redis_client, freezer)
    )


class DownRedis:
    """A Redis that is not there, counting the calls made to it."""

    def __init__(self) -> None:
        self.calls = 0

    def get(self, key):
        self.calls += 1
        raise redis.ConnectionError("connection refused")

    def set(self, key, value, ex=None):
        self.calls += 1
        raise redis.ConnectionError("connection refused")


def test_redis_down_answers_from_the_database_and_leaves_redis_alone_for_a_while(past, uncached, database, clock):
    freezer, now = past
    down = DownRedis()
    settings = AnalyticsCacheSettings(analytics_cache_retry_after_s=30)
    service = AnalyticsService(
        database,
        AggregateSettings(aggregate_timezone=ZONE),
        cache=HistoryCache(
            down,
            settings,
            clock,  # type: ignore[arg-type]
        ),
    )

    assert history(service, freezer, now) == history(uncached, freezer, now)
    assert down.calls == 1
    history(service, freezer, now)
    assert down.calls == 1  # within the 30 s

    clock.now += 31
    assert history(service, freezer, now) == history(uncached, freezer, now)
    assert down.calls == 2
