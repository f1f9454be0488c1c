"""Snooze and maintenance window bodies: what they mean, and every problem answered with its JSON path
(no database)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from easysmart.alerting.api import parse_snooze
from easysmart.alerting.maintenance import parse_window_body
from easysmart.errors import UnprocessableError

NOW = datetime(2026, 12, 2, 15, 0, tzinfo=timezone.utc)


def paths_of(parse, body: object) -> list[str]:
    with pytest.raises(UnprocessableError) as caught:
        parse(body, NOW)
    assert caught.value.status == 422
    return caught.value.details["paths"]


def test_a_snooze_is_for_some_seconds_until_a_time_or_lifted():
    assert parse_snooze({"for_s": 3600}, NOW) == NOW + timedelta(hours=1)
    assert parse_snooze({"until": "2026-12-02T14:00:00-03:00"}, NOW) == NOW + timedelta(hours=2)
    assert parse_snooze({"until": "2026-12-03T15:00:00Z"}, NOW) == NOW + timedelta(days=1)
    assert parse_snooze({"until": None}, NOW) is None


@pytest.mark.parametrize(
    ("body", "paths"),
    [
        ({}, ["$"]),
        ({"for_s": 60, "until": None}, ["$"]),
        ([3600], ["$"]),
        ({"for_s": 3600, "minutes": 5}, ["$.minutes"]),
        ({"for_s": 59}, ["$.for_s"]),
        ({"for_s": 7 * 86400 + 1}, ["$.for_s"]),
        ({"for_s": "3600"}, ["$.for_s"]),
        ({"for_s": True}, ["$.for_s"]),
        ({"until": "2026-12-02T16:00:00"}, ["$.until"]),  # no offset: in which zone?
        ({"until": "2026-12-02T14:00:00Z"}, ["$.until"]),  # past
        ({"until": "2026-12-10T15:00:00Z"}, ["$.until"]),  # past the week
        ({"until": "tomorrow"}, ["$.until"]),
        ({"until": 1764687600}, ["$.until"]),
    ],
)
def test_a_bad_snooze_body_is_422_naming_its_path(body, paths):
    assert paths_of(parse_snooze, body) == paths


def test_a_window_body_is_read_with_its_offsets():
    body = {
        "equipment_uuid": " eq-1 ",
        "starts_at": "2026-12-03T02:00:00-03:00",
        "ends_at": "2026-12-03T03:30:00-03:00",
        "reason": "degelo",
    }

    assert parse_window_body(body, NOW) == (
        "eq-1",
        datetime(2026, 12, 3, 5, 0, tzinfo=timezone.utc),
        datetime(2026, 12, 3, 6, 30, tzinfo=timezone.utc),
        "degelo",
    )
    assert parse_window_body({**body, "reason": None}, NOW)[3] is None


@pytest.mark.parametrize(
    ("changes", "paths"),
    [
        ({"equipment_uuid": None}, ["$.equipment_uuid"]),
        ({"starts_at": None, "ends_at": None}, ["$.starts_at", "$.ends_at"]),
        ({"ends_at": "2026-12-03T02:00:00-03:00"}, ["$.ends_at"]),  # not after the start
        ({"ends_at": "2026-12-10T02:00:01-03:00"}, ["$.ends_at"]),  # longer than a week
        ({"starts_at": "2026-11-25T14:59:00Z", "ends_at": "2026-11-25T16:00:00Z"}, ["$.starts_at"]),  # too long ago
        ({"starts_at": "2028-01-01T00:00:00Z", "ends_at": "2028-01-01T01:00:00Z"}, ["$.starts_at"]),  # too far ahead
        ({"starts_at": "2026-12-03T02:00:00"}, ["$.starts_at"]),  # no offset
        ({"reason": "x" * 501}, ["$.reason"]),
        ({"reason": "a\x00b"}, ["$.reason"]),
        ({"equipment_uuid": 7, "color": "red"}, ["$.color", "$.equipment_uuid"]),
    ],
)
def test_a_bad_window_body_is_422_naming_every_path(changes, paths):
    body = {
        "equipment_uuid": "eq-1",
        "starts_at": "2026-12-03T02:00:00-03:00",
        "ends_at": "2026-12-03T03:30:00-03:00",
        **changes,
    }
    body = {name: value for name, value in body.items() if value is not None or name == "reason"}

    assert paths_of(parse_window_body, body) == paths


def test_a_window_body_that_is_not_an_object_is_422():
    assert paths_of(parse_window_body, ["eq-1"])[0] == "$"
