"""The collector serves the last figures each source read, grouped by prefix and day, and keeps them when a
source fails; the time is the tests' clock."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support.clock import SetClock

from easysmart.collector import SERVED, Collector, ObjectStoreSource, key_group, watch_paths
from easysmart.config import ConfigError
from easysmart.metrics import AGGREGATE_WATERMARK_AGE, BATCHES_STUCK, COLLECTOR_LAST_SUCCESS, DB_RAW_BYTES

START = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


class FakeS3:
    """list_objects_v2 pages of a key listing, two keys a page."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = sizes

    def get_paginator(self, operation: str):
        assert operation == "list_objects_v2"
        return self

    def paginate(self, Bucket: str):
        items = [{"Key": key, "Size": size} for key, size in self.sizes.items()]
        return [{"Contents": items[i : i + 2]} for i in range(0, len(items), 2)] + [{}]


class ScriptedSource:
    """Answers the figures it is given, or raises while `failing`."""

    name = "database"
    interval_s = 60.0

    def __init__(self) -> None:
        self.figures: dict = {}
        self.failing = False
        self.reads = 0

    def read(self):
        self.reads += 1
        if self.failing:
            raise ConnectionError("database unreachable")
        return self.figures


def samples(collector: Collector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_object_keys_are_grouped_by_prefix_and_day_never_by_tenant():
    source = ObjectStoreSource(
        FakeS3(
            {
                "raw/2026/02/27/tenant-a/b1.json.gz": 100,
                "raw/2026/02/27/tenant-b/b2.json.gz": 50,
                "raw/2026/02/28/tenant-a/b3.json.gz": 7,
                "exports/readme.txt": 3,
                "stray": 1,
            }
        ),
        "bucket",
        300,
    )
    clock = SetClock(START)
    collector = Collector([source], clock, clock.monotonic)

    collector.refresh_due()
    seen = samples(collector)

    assert seen[("esm_object_store_objects", (("day", "2026-02-27"), ("prefix", "raw")))] == 2
    assert seen[("esm_object_store_bytes", (("day", "2026-02-27"), ("prefix", "raw")))] == 150
    assert seen[("esm_object_store_objects", (("day", "2026-02-28"), ("prefix", "raw")))] == 1
    assert seen[("esm_object_store_bytes", (("day", "none"), ("prefix", "exports")))] == 3
    assert seen[("esm_object_store_objects", (("day", "none"), ("prefix", "none")))] == 1
    assert not any("tenant" in value for _, labels in seen for _, value in labels)


@pytest.mark.parametrize(
    ("key", "group"),
    [
        ("raw/2026/12/01/t/b.json.gz", ("raw", "2026-12-01")),
        ("raw/2026/12/", ("raw", "none")),
        ("raw/x/y", ("raw", "none")),
        ("top-level", ("none", "none")),
    ],
)
def test_key_group(key, group):
    assert key_group(key) == group


def test_a_failing_source_keeps_its_last_figures_and_its_last_success_time():
    clock = SetClock(START)
    source = ScriptedSource()
    source.figures = {DB_RAW_BYTES: {(): 4096.0}, BATCHES_STUCK: {(): 2.0}}
    collector = Collector([source], clock, clock.monotonic)
    collector.refresh_due()

    clock.advance(60)
    source.failing = True
    collector.refresh_due()
    seen = samples(collector)

    assert source.reads == 2
    assert seen[("esm_db_raw_bytes", ())] == 4096
    assert seen[("esm_batches_stuck_processing", ())] == 2
    assert seen[("esm_collector_last_success_timestamp_seconds", (("source", "database"),))] == START.timestamp()


def test_a_source_is_read_again_only_once_its_interval_has_passed():
    clock = SetClock(START)
    source = ScriptedSource()
    collector = Collector([source], clock, clock.monotonic)

    collector.refresh_due()
    clock.advance(59)
    collector.refresh_due()
    assert source.reads == 1
    clock.advance(1)
    collector.refresh_due()
    assert source.reads == 2


def test_a_scrape_reads_no_source():
    clock = SetClock(START)
    source = ScriptedSource()
    collector = Collector([source], clock, clock.monotonic)

    samples(collector)
    samples(collector)

    assert source.reads == 0


def test_the_watermark_age_grows_between_reads():
    clock = SetClock(START)
    source = ScriptedSource()
    refreshed_at = START.timestamp() - 120
    source.figures = {AGGREGATE_WATERMARK_AGE: {("telemetry_hourly",): refreshed_at}}
    collector = Collector([source], clock, clock.monotonic)
    collector.refresh_due()

    assert samples(collector)[("esm_aggregate_watermark_age_seconds", (("aggregate", "telemetry_hourly"),))] == 120
    clock.advance(30)
    assert samples(collector)[("esm_aggregate_watermark_age_seconds", (("aggregate", "telemetry_hourly"),))] == 150


def test_the_exposition_uses_the_catalogue_names_and_labels():
    collector = Collector([])
    described = {family.name: family for family in collector.collect()}

    for gauge in (*SERVED, COLLECTOR_LAST_SUCCESS):
        [catalogue] = gauge.describe()
        assert catalogue.name in described
        assert described[catalogue.name].type == "gauge"


def test_watch_paths_are_name_path_pairs():
    assert watch_paths(("state=/srv/state", "data=/d")) == {"state": "/srv/state", "data": "/d"}
    with pytest.raises(ConfigError, match="COLLECTOR_WATCH_PATHS"):
        watch_paths(("/srv/state",))
