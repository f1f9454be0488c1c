"""The ping-source bridge's cron matcher and its CloudEvent headers."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from easysmart.bridges.ping_source import EVENT_TYPE, CronError, CronSchedule, PingSource, ping_headers, pings_of
from easysmart.config import PingSourceSettings
from easysmart.errors import EasySmartError


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def test_every_five_minutes_matches_multiples_of_five_only():
    schedule = CronSchedule.parse("*/5 * * * *")
    assert schedule.matches(at("2026-11-26 10:35"))
    assert not schedule.matches(at("2026-11-26 10:36"))


def test_daily_schedule_fires_once_a_day_at_its_minute():
    schedule = CronSchedule.parse("17 3 * * *")
    assert schedule.next_after(at("2026-11-26 03:17")) == at("2026-11-27 03:17")
    assert schedule.next_after(at("2026-11-26 01:00")) == at("2026-11-26 03:17")


def test_lists_ranges_and_stepped_ranges():
    schedule = CronSchedule.parse("0,30 8-18/2 * 1-3,12 *")
    assert schedule.matches(at("2026-12-01 10:30"))
    assert not schedule.matches(at("2026-12-01 11:30"))
    assert not schedule.matches(at("2026-11-01 10:30"))


def test_day_of_week_with_sunday_as_0_or_7():
    sunday = at("2026-11-29 00:00")
    assert CronSchedule.parse("0 0 * * 0").matches(sunday)
    assert CronSchedule.parse("0 0 * * 7").matches(sunday)
    assert not CronSchedule.parse("0 0 * * 1-5").matches(sunday)


def test_restricted_day_of_month_and_weekday_match_either():
    schedule = CronSchedule.parse("0 0 1 * 1")  # the 1st, or any Monday
    assert schedule.matches(at("2026-11-30 00:00"))  # a Monday
    assert schedule.matches(at("2026-12-01 00:00"))  # the 1st (a Tuesday)
    assert not schedule.matches(at("2026-12-02 00:00"))


def test_a_stepped_day_of_month_is_restricted_as_in_pingsource():
    schedule = CronSchedule.parse("0 0 */2 * 1")  # odd days, or any Monday
    assert schedule.matches(at("2026-11-30 00:00"))  # an even Monday
    assert schedule.matches(at("2026-12-03 00:00"))  # an odd Thursday
    assert not schedule.matches(at("2026-12-02 00:00"))


def test_every_day_written_as_a_step_leaves_the_weekday_alone():
    schedule = CronSchedule.parse("0 0 */1 * 1")
    assert schedule.matches(at("2026-11-30 00:00"))
    assert not schedule.matches(at("2026-12-01 00:00"))


def test_a_leap_day_schedule_fires_on_the_next_leap_day():
    assert CronSchedule.parse("0 0 29 2 *").next_after(at("2026-11-26 10:35")) == at("2028-02-29 00:00")


def test_a_schedule_that_never_fires_is_an_error_when_asked_for_its_next_minute():
    with pytest.raises(CronError, match="never fires"):
        CronSchedule.parse("0 0 31 2 *").next_after(at("2026-11-26 10:35"))


@pytest.mark.parametrize(
    "expression",
    [
        "* * * *",
        "60 * * * *",
        "*/0 * * * *",
        "a * * * *",
        "5-1 * * * *",
        "*/ * * * *",
        "0 * * * * *",
        "@hourly",
        "0 0 L * *",
        "0 0 * * 1#2",
        "0 0 * * MON",
        "0 0 * * 8",
    ],
)
def test_unreadable_expressions_are_refused(expression):
    with pytest.raises(CronError) as caught:
        CronSchedule.parse(expression)
    assert isinstance(caught.value, EasySmartError) and isinstance(caught.value, ValueError)


def test_ping_headers_are_a_binary_mode_pingsource_event():
    headers = ping_headers("retention-refresh", event_id="e1", now=at("2026-11-26 10:35"))
    assert headers["ce-type"] == EVENT_TYPE
    assert headers["ce-source"] == "/apis/v1/namespaces/default/pingsources/retention-refresh"
    assert headers["ce-id"] == "e1" and headers["ce-specversion"] == "1.0"
    assert headers["ce-time"] == "2026-11-26T10:35:00Z"


def test_each_ping_goes_to_its_own_function_and_an_empty_url_leaves_it_out():
    config = PingSourceSettings(alerts_url="http://alerts/", notify_url="")

    pings = pings_of(config)

    assert {name: (ping.url, ping.data) for name, ping in pings.items()} == {
        "retention-refresh": ("http://127.0.0.1:8085/", {"job": "refresh"}),
        "retention-expire": ("http://127.0.0.1:8085/", {"job": "expire"}),
        "alerts-tick": ("http://alerts/", {"job": "tick"}),
    }
    assert PingSource(pings).due(at("2026-11-26 10:36")) == ["alerts-tick"]
    assert PingSource(pings).due(at("2026-11-26 10:35")) == ["retention-refresh", "alerts-tick"]
