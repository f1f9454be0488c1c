"""Parameter validation and cursors of the analytics API (no database)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from easysmart.analytics import (
    PeriodSpans,
    decode_cursor,
    encode_cursor,
    parse_int,
    parse_limit,
    parse_period,
    parse_sensor_type,
    parse_time,
    parse_window,
)
from easysmart.errors import BadRequestError
from easysmart.retention import parse_job

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def parameter_of(call) -> str:
    with pytest.raises(BadRequestError) as caught:
        call()
    return caught.value.details["parameter"]


def test_window_defaults_to_the_last_24_hours():
    assert parse_window({}, NOW) == (NOW - timedelta(hours=24), NOW)


def test_times_with_offsets_are_read_in_utc_and_naive_times_as_utc():
    assert parse_time("start_date", "2026-11-26T09:00:00-03:00") == NOW
    assert parse_time("start_date", "2026-11-26T12:00:00Z") == NOW
    assert parse_time("start_date", "2026-11-26T12:00:00") == NOW


def test_bad_times_and_reversed_windows_name_their_parameter():
    assert parameter_of(lambda: parse_window({"start_date": "yesterday"}, NOW)) == "start_date"
    assert parameter_of(lambda: parse_window({"end_date": "2026-13-45"}, NOW)) == "end_date"
    assert (
        parameter_of(lambda: parse_window({"start_date": "2026-11-27", "end_date": "2026-11-26"}, NOW)) == "start_date"
    )


def test_auto_period_follows_the_span():
    assert parse_period("auto", NOW - timedelta(days=2), NOW) == "raw"
    assert parse_period(None, NOW - timedelta(days=3), NOW) == "hour"
    assert parse_period("auto", NOW - timedelta(days=61), NOW) == "day"
    assert parse_period("DAY", NOW - timedelta(hours=1), NOW) == "day"
    assert parameter_of(lambda: parse_period("week", NOW, NOW)) == "period"


def test_limit_defaults_to_1000_and_stays_within_1_to_10000():
    assert parse_limit(None) == 1000
    assert parse_limit("10000") == 10000
    assert parameter_of(lambda: parse_limit("10001")) == "limit"
    assert parameter_of(lambda: parse_limit("0")) == "limit"
    assert parameter_of(lambda: parse_int("hours", "x", 24, 1, 168)) == "hours"


def test_sensor_type_takes_either_vocabulary():
    assert parse_sensor_type("temperatura") == parse_sensor_type("temperature") == "temperature"
    assert parse_sensor_type(None) is None
    assert parameter_of(lambda: parse_sensor_type(" ")) == "sensor_type"


def test_cursor_round_trips_and_foreign_cursors_are_refused():
    cursor = encode_cursor("h", "2026-11-26T12:00:00+00:00", 42)
    assert decode_cursor(cursor, "h", (str, int)) == (NOW, 42)
    assert decode_cursor(None, "h", (str, int)) is None
    assert parameter_of(lambda: decode_cursor(cursor, "r", (str, int))) == "cursor"
    assert parameter_of(lambda: decode_cursor("not-a-cursor!", "h", (str, int))) == "cursor"
    assert parameter_of(lambda: decode_cursor(encode_cursor("e", "x"), "e", (int,))) == "cursor"


def test_retention_jobs():
    assert parse_job(None) == "all"
    assert parse_job("refresh") == "refresh"
    assert parameter_of(lambda: parse_job("vacuum")) == "job"


@pytest.mark.parametrize(
    ("args", "parameter"),
    [
        ({"start_date": "9999-12-31T23:00:00Z"}, "start_date"),
        ({"end_date": "0001-01-01T01:00:00Z"}, "end_date"),
        ({"start_date": "1999-12-31T23:59:59Z"}, "start_date"),
        ({"end_date": "2100-01-01T00:00:01Z"}, "end_date"),
        ({"start_date": "0001-01-01T00:00:00+14:00"}, "start_date"),
    ],
)
def test_times_outside_the_accepted_years_answer_400_naming_the_parameter(args, parameter):
    assert parameter_of(lambda: parse_window(args, NOW)) == parameter


@pytest.mark.parametrize(("period", "days"), [("raw", 7), ("hour", 93), ("day", 5 * 366)])
def test_each_period_covers_at_most_its_span(period, days):
    assert parse_period(period, NOW - timedelta(days=days), NOW) == period
    assert parameter_of(lambda: parse_period(period, NOW - timedelta(days=days, seconds=1), NOW)) == "period"


def test_auto_period_over_the_longest_span_is_refused_and_spans_are_configurable():
    assert parameter_of(lambda: parse_period("auto", datetime(2001, 1, 1, tzinfo=timezone.utc), NOW)) == "period"
    short = PeriodSpans(raw=timedelta(hours=1))
    assert parameter_of(lambda: parse_period("raw", NOW - timedelta(hours=2), NOW, short)) == "period"
