"""The alerting logic on the readings' own times: runs, gaps, hysteresis, resolution, flapping, cadence."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from easysmart.alerting.engine import AlertEngine, WatchedSensor, applies
from easysmart.alerting.evaluation import (
    Bound,
    Excursion,
    Policy,
    Sample,
    excursions,
    in_window,
    is_late,
    silence_threshold_s,
    suppressed,
)
from easysmart.config import AlertSettings
from easysmart.errors import BadRequestError

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def series(values: list[float], every_min: float = 1.0, start_min: float = 0.0) -> list[Sample]:
    return [Sample(at(start_min + i * every_min), v) for i, v in enumerate(values)]


FREEZER = Policy(Bound(above=-15.0), for_s=600, resolve_for_s=0, gap_s=900)


def test_readings_beyond_the_bound_for_the_duration_fire_from_the_first_one():
    samples = series([-18, -14, -13, -12, -11, -12, -13, -12, -14, -13, -12, -12])

    (found,) = excursions(samples, FREEZER)

    assert found.started_at == at(1)
    assert found.trigger_value == -14
    assert found.fired_at == at(11)  # t1 - t0 = 10 min
    assert found.peak_value == -11
    assert found.ended_at is None


def test_a_run_shorter_than_the_duration_does_not_fire():
    assert excursions(series([-18, -14, -13, -12, -18, -14, -14]), FREEZER) == []


def test_a_reading_inside_the_bound_restarts_the_run():
    values = [-14] * 6 + [-16] + [-14] * 6
    assert excursions(series(values), FREEZER) == []


def test_a_gap_longer_than_the_threshold_ends_the_run():
    before = series([-14, -14, -14])
    after = series([-14] * 9, start_min=25)  # 23 minutes without readings, then 8 more minutes beyond

    assert excursions(before + after, FREEZER) == []
    (found,) = excursions(before + series([-14] * 9, start_min=10), FREEZER)
    assert found.started_at == at(0)


def test_back_inside_resolves_at_the_first_reading_inside():
    samples = series([-14] * 11 + [-16, -17])

    (found,) = excursions(samples, FREEZER)

    assert found.ended_at == at(11)


def test_resolution_waits_for_the_resolve_duration_inside():
    policy = Policy(Bound(above=-15.0), for_s=600, resolve_for_s=300, gap_s=900)
    bounce = series([-14] * 11 + [-16, -16, -14] + [-16] * 4)

    (found,) = excursions(bounce, policy)
    assert found.ended_at is None  # 4 minutes inside only, then beyond again, then 3 minutes

    (found,) = excursions(series([-14] * 11 + [-16] * 7), policy)
    assert found.ended_at == at(11)


def test_hysteresis_keeps_the_alert_open_in_the_band():
    policy = Policy(Bound(above=-15.0, hysteresis=1.0), for_s=600, resolve_for_s=0, gap_s=900)
    samples = series([-14] * 11 + [-15.5, -15.2, -16.5])

    (found,) = excursions(samples, policy)

    assert found.ended_at == at(13)


def test_below_bound_peaks_at_the_lowest_value():
    policy = Policy(Bound(below=2.0), for_s=120, resolve_for_s=0, gap_s=900)

    (found,) = excursions(series([3, 1, 0.5, -1, 0, 3]), policy)

    assert (found.trigger_value, found.peak_value, found.ended_at) == (1, -1, at(5))


def test_door_open_longer_than_the_duration_fires_and_closing_resolves():
    door = Policy(Bound(above=0.5), for_s=120, resolve_for_s=0, gap_s=900, held=True)

    (found,) = excursions(series([0, 1, 1, 1, 1, 1, 0], every_min=0.5), door)
    assert (found.started_at, found.fired_at, found.ended_at) == (at(0.5), at(2.5), at(3))

    (found,) = excursions([Sample(at(0), 0), Sample(at(1), 1), Sample(at(41), 0)], door)  # reported on change
    assert (found.started_at, found.fired_at, found.ended_at) == (at(1), at(3), at(41))

    assert excursions(series([0, 1, 1, 1, 0], every_min=0.5), door) == []  # open 90 s only


def test_low_battery_fires_at_once_without_a_duration():
    battery = Policy(Bound(below=20), for_s=0, resolve_for_s=0, gap_s=900)

    (found,) = excursions(series([25, 21, 19, 18]), battery)

    assert (found.started_at, found.fired_at, found.peak_value) == (at(2), at(2), 18)


def test_an_ongoing_excursion_continues_and_resolves():
    ongoing = Excursion(at(-30), -14.0, at(-20), -12.0, alert_id="a1")

    (found,) = excursions(series([-10, -13, -16]), FREEZER, ongoing=ongoing)

    assert found is ongoing
    assert (found.peak_value, found.ended_at) == (-10, at(2))


def test_flapping_holds_the_resolution_and_folds_the_next_excursions():
    quick = Policy(Bound(above=-15.0), for_s=60, resolve_for_s=0, gap_s=900, flap_transitions=4, flap_window_s=1800)
    # beyond 2 min, inside 2 min, repeatedly: fire, resolve, fire, then the resolve would be the 4th transition
    cycle = [-14, -14, -16, -16]
    samples = series(cycle * 5 + [-16] * 31)

    found = excursions(samples, quick)

    assert len(found) == 2
    first, second = found
    assert (first.started_at, first.ended_at) == (at(0), at(2))
    assert second.started_at == at(4)
    assert second.folded == 6  # three more excursions folded into it
    assert second.ended_at == at(18)  # the readings then stayed inside for the whole window


def test_history_counts_towards_flapping():
    quick = Policy(Bound(above=-15.0), for_s=60, resolve_for_s=0, gap_s=900, flap_transitions=4, flap_window_s=1800)
    history = [at(-10), at(-8)]  # an earlier alert of the same rule and sensor fired and resolved

    (found,) = excursions(series([-14, -14, -16, -16]), quick, history=history)

    assert found.ended_at is None


def test_silence_threshold_is_the_minimum_or_three_times_the_median_gap():
    every_minute = [at(i) for i in range(10)]
    every_ten = [at(10 * i) for i in range(10)]

    assert silence_threshold_s(every_minute, 900, 3.0) == 900
    assert silence_threshold_s(every_ten, 900, 3.0) == 1800
    assert silence_threshold_s([at(0)], 900, 3.0) == 900


def test_late_when_the_duration_was_reached_long_before_the_upload():
    assert is_late(at(0), at(180), 300)
    assert not is_late(at(0), at(4), 300)


def test_maintenance_window_is_half_open():
    windows = [(at(0), at(30))]

    assert in_window(windows, at(0)) and in_window(windows, at(29))
    assert not in_window(windows, at(30))


def rule(**fields) -> dict:
    return {"type": "threshold", "sensor_id": None, "equipment_id": None, "sensor_kind": None, **fields}


def test_a_rule_watches_its_sensor_a_kind_in_its_equipment_or_a_kind_in_the_tenant():
    probe = WatchedSensor(7, equipment_id=3, kind="temperature", first_ts=T0, last_ts=T0)

    assert applies(rule(sensor_id=7), probe) and not applies(rule(sensor_id=8), probe)
    assert applies(rule(equipment_id=3, sensor_kind="temperature"), probe)
    assert not applies(rule(equipment_id=4, sensor_kind="temperature"), probe)
    assert applies(rule(sensor_kind="temperature"), probe) and not applies(rule(sensor_kind="humidity"), probe)
    assert not applies(rule(type="door_open", equipment_id=3), probe)
    assert applies(rule(type="door_open", equipment_id=3), WatchedSensor(9, 3, "door", T0, T0))
    assert applies(rule(type="battery_low"), probe) and not applies(rule(type="battery_low", equipment_id=4), probe)


def test_maintenance_suppresses_only_an_excursion_it_holds_whole():
    defrost = [(at(0), at(30))]
    inside = Excursion(at(5), 0.0, at(15), 2.0, ended_at=at(25))
    outlasting = Excursion(at(5), 0.0, at(15), 2.0, ended_at=at(40))
    still_open = Excursion(at(5), 0.0, at(15), 2.0)

    assert suppressed(defrost, inside, last_seen=at(26))
    assert not suppressed(defrost, outlasting, last_seen=at(41))
    assert suppressed(defrost, still_open, last_seen=at(20))  # the window has not ended in the readings yet
    assert not suppressed(defrost, still_open, last_seen=at(31))
    assert not suppressed(defrost, Excursion(at(31), 0.0, at(41), 2.0), last_seen=at(42))


def test_a_malformed_stored_event_is_refused_naming_the_field():
    engine = AlertEngine(db=None, settings=AlertSettings())  # type: ignore[arg-type]  # refused before any query
    data = {
        "tenant_id": "5b50551d-2a53-4d2b-b663-21203db5f85d",
        "batch_id": "71544285-14af-4d1f-8404-b7ba7f3247d8",
        "received_at": T0.isoformat(),
        "equipment": [{"equipment_id": 1}],
        "sensors": [{"sensor_id": 2, "equipment_id": 1, "kind": "door", "first_ts": "yesterday", "last_ts": "now"}],
    }

    with pytest.raises(BadRequestError) as refused:
        engine.on_stored(data)

    assert refused.value.details["path"] == "sensors[0]"
