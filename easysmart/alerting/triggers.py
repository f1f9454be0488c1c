"""What wakes the alerts function: a batch's stored-telemetry event, or the minute's ping.

An event of any other type, or a ping for another job, is refused (400) so the source dead-letters it
rather than retrying it forever; the engine's outage errors (UnavailableError, 503) make the source retry.
"""

from __future__ import annotations

from typing import Protocol

from cloudevents.http import CloudEvent

from easysmart.errors import BadRequestError
from easysmart.outbox import TELEMETRY_STORED_TYPE

# Knative PingSource's event type (the local ping-source bridge sends the same; a bridge is not imported here).
PING_TYPE = "dev.knative.sources.ping"
TICK_JOB = "tick"


class Evaluator(Protocol):
    """What the alerts engine offers its triggers (easysmart.alerting.engine.AlertEngine)."""

    def on_stored(self, data: dict) -> dict: ...

    def on_tick(self) -> dict: ...


class UnexpectedEventError(BadRequestError):
    code = "unexpected_event"


def dispatch(event: CloudEvent, evaluator: Evaluator) -> dict:
    """Hands the event to the evaluator; its report is the answer."""
    event_type, data = event["type"], event.get_data()
    if event_type == TELEMETRY_STORED_TYPE:
        if not isinstance(data, dict):
            raise UnexpectedEventError(f"a {TELEMETRY_STORED_TYPE} event's data must be a JSON object")
        return evaluator.on_stored(data)
    if event_type == PING_TYPE:
        job = data.get("job") if isinstance(data, dict) else None
        if job != TICK_JOB:
            raise UnexpectedEventError(
                f'a ping to the alerts function must carry {{"job": "{TICK_JOB}"}}, not {data!r:.64}'
            )
        return evaluator.on_tick()
    raise UnexpectedEventError(
        f"unexpected event type {event_type[:128]!r}; the alerts function takes {TELEMETRY_STORED_TYPE} and {PING_TYPE}"
    )
