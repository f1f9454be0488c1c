"""Alert rule bodies: what is accepted, and every problem answered with its path (no database)."""

from __future__ import annotations

import pytest

from easysmart.alerting.rules import MAX_DURATION_S, RuleInvalidError, RuleSpec, parse_rule


def problems_of(body: object) -> dict[str, str]:
    with pytest.raises(RuleInvalidError) as caught:
        parse_rule(body)
    error = caught.value
    assert error.status == 422 and error.details["paths"] == [e["path"] for e in error.details["errors"]]
    return {e["path"]: e["message"] for e in error.details["errors"]}


def test_a_threshold_rule_on_one_sensor():
    spec = parse_rule({"type": "threshold", "sensor_uuid": "s-1", "above": -15.0, "for_s": 600, "severity": "critical"})

    assert spec == RuleSpec("threshold", severity="critical", sensor_uuid="s-1", above=-15.0, for_s=600)


def test_sensor_type_takes_either_vocabulary_and_is_stored_in_english():
    by_equipment = parse_rule({"type": "threshold", "equipment_uuid": "e-1", "sensor_type": "Temperatura", "below": 2})
    tenant_wide = parse_rule({"type": "threshold", "sensor_type": "temperature", "above": 8, "hysteresis": 0.5})

    assert (by_equipment.equipment_uuid, by_equipment.sensor_kind, by_equipment.below) == ("e-1", "temperature", 2.0)
    assert (tenant_wide.equipment_uuid, tenant_wide.sensor_kind, tenant_wide.hysteresis) == (None, "temperature", 0.5)


def test_door_silence_and_battery_rules_with_their_defaults():
    door = parse_rule({"type": "door_open", "equipment_uuid": "e-1", "for_s": 120})
    silence = parse_rule({"type": "silence"})
    battery = parse_rule({"type": "battery_low", "below": 20})

    assert (door.sensor_kind, door.for_s, door.severity) == ("door", 120, "warning")
    assert (silence.equipment_uuid, silence.for_s) == (None, None)  # tenant-wide, the cadence's default
    assert (battery.below, battery.equipment_uuid, battery.for_s) == (20.0, None, 0)


def test_a_rule_read_from_the_api_can_be_sent_back():
    answered = {
        "id": "0b0f3c1e-0000-4000-8000-000000000000",
        "type": "door_open",
        "origin": "client",
        "user_edited": False,
        "severity": "warning",
        "name": None,
        "enabled": True,
        "sensor_uuid": None,
        "equipment_uuid": "e-1",
        "for_s": 300,
        "created_at": "2026-12-01T10:00:00+00:00",
        "updated_at": "2026-12-01T10:00:00+00:00",
    }

    assert parse_rule({**answered, "for_s": 600}).for_s == 600


@pytest.mark.parametrize(
    ("body", "paths"),
    [
        ([], ["$"]),
        ({}, ["type"]),
        ({"type": "heat"}, ["type"]),
        ({"type": "threshold", "sensor_uuid": "s", "above": 1, "colour": "red"}, ["colour"]),
        ({"type": "threshold", "sensor_uuid": "s"}, ["above"]),
        ({"type": "threshold", "sensor_uuid": "s", "above": 1, "below": 0}, ["above"]),
        ({"type": "threshold", "above": 1}, ["sensor_uuid"]),
        ({"type": "threshold", "equipment_uuid": "e", "above": 1}, ["sensor_type"]),
        ({"type": "threshold", "sensor_uuid": "s", "equipment_uuid": "e", "above": 1}, ["equipment_uuid"]),
        ({"type": "threshold", "sensor_uuid": "s", "above": "-15"}, ["above"]),
        ({"type": "threshold", "sensor_uuid": "s", "above": True}, ["above"]),
        ({"type": "threshold", "sensor_uuid": "s", "above": float("nan")}, ["above"]),
        ({"type": "threshold", "sensor_uuid": "s", "above": float("inf")}, ["above"]),
        ({"type": "threshold", "sensor_uuid": "s", "above": 1e300}, ["above"]),
        ({"type": "threshold", "sensor_uuid": "s", "above": 1, "for_s": -1}, ["for_s"]),
        ({"type": "threshold", "sensor_uuid": "s", "above": 1, "for_s": MAX_DURATION_S + 1}, ["for_s"]),
        ({"type": "threshold", "sensor_uuid": "s", "above": 1, "for_s": 1.5}, ["for_s"]),
        ({"type": "threshold", "sensor_uuid": "s", "above": 1, "resolve_for_s": "600"}, ["resolve_for_s"]),
        ({"type": "threshold", "sensor_uuid": "s", "above": 1, "hysteresis": -0.5}, ["hysteresis"]),
        ({"type": "threshold", "sensor_uuid": "s", "above": 1, "severity": "fatal"}, ["severity"]),
        ({"type": "threshold", "sensor_uuid": "s", "above": 1, "name": "x" * 201}, ["name"]),
        ({"type": "threshold", "sensor_uuid": "s", "above": 1, "name": "a\x00b"}, ["name"]),
        ({"type": "threshold", "sensor_uuid": "s" * 129, "above": 1}, ["sensor_uuid"]),
        ({"type": "threshold", "sensor_uuid": 7, "above": 1}, ["sensor_uuid"]),
        ({"type": "threshold", "sensor_uuid": "s", "above": 1, "enabled": "yes"}, ["enabled"]),
        ({"type": "door_open", "equipment_uuid": "e"}, ["for_s"]),
        ({"type": "door_open", "sensor_type": "door", "for_s": 60}, ["sensor_type"]),
        ({"type": "silence", "for_s": 30}, ["for_s"]),
        ({"type": "silence", "sensor_uuid": "s"}, ["sensor_uuid"]),
        ({"type": "battery_low"}, ["below"]),
        ({"type": "battery_low", "below": 120}, ["below"]),
        ({"type": "battery_low", "below": 20, "above": 5}, ["above"]),
        ({"type": "battery_low", "below": 20, "sensor_uuid": "s", "equipment_uuid": "e"}, ["equipment_uuid"]),
    ],
)
def test_a_bad_body_is_refused_naming_the_path(body, paths):
    assert list(problems_of(body)) == paths


def test_every_problem_of_a_body_is_answered_at_once():
    problems = problems_of(
        {"type": "threshold", "sensor_uuid": "", "above": "hot", "for_s": -5, "severity": "high", "extra": 1}
    )

    assert set(problems) == {"extra", "severity", "sensor_uuid", "above", "for_s"}
    assert problems["for_s"] == f"must be between 0 and {MAX_DURATION_S} seconds (7 days), not -5"
