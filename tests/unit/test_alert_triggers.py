"""What wakes the alerts function: stored-telemetry events and the tick ping reach the engine; anything else
is refused so its source dead-letters it (no database)."""

from __future__ import annotations

import pytest
from cloudevents.http import CloudEvent

from easysmart.alerting.triggers import UnexpectedEventError, dispatch
from easysmart.bridges.ping_source import EVENT_TYPE as PING_TYPE
from easysmart.outbox import TELEMETRY_STORED_TYPE


class FakeEngine:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_stored(self, data: dict) -> dict:
        self.calls.append(("stored", data))
        return {"evaluated": 1}

    def on_tick(self) -> dict:
        self.calls.append(("tick",))
        return {"silent": 0}


def event(event_type: str, data: object) -> CloudEvent:
    return CloudEvent({"type": event_type, "source": "/test", "id": "e-1"}, data)


def test_a_stored_event_is_evaluated_with_its_data_and_the_report_answered():
    engine, data = FakeEngine(), {"tenant_id": "t", "batch_id": "b", "sensors": []}

    report = dispatch(event(TELEMETRY_STORED_TYPE, data), engine)

    assert (report, engine.calls) == ({"evaluated": 1}, [("stored", data)])


def test_the_tick_ping_evaluates_silence():
    engine = FakeEngine()

    assert dispatch(event(PING_TYPE, {"job": "tick"}), engine) == {"silent": 0}
    assert engine.calls == [("tick",)]


@pytest.mark.parametrize(
    ("event_type", "data"),
    [
        ("com.example.other", {}),
        (PING_TYPE, {"job": "expire"}),
        (PING_TYPE, None),
        (TELEMETRY_STORED_TYPE, ["not", "an", "object"]),
    ],
)
def test_other_events_are_refused_and_reach_no_engine(event_type, data):
    engine = FakeEngine()

    with pytest.raises(UnexpectedEventError) as caught:
        dispatch(event(event_type, data), engine)

    assert caught.value.status == 400 and engine.calls == []
