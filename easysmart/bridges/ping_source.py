"""Local ping-source bridge with Knative PingSource semantics.

On each schedule's minute it POSTs a binary-mode CloudEvent (type dev.knative.sources.ping,
data `{"job": ...}`) to that schedule's function, one PingSource each: retention's refresh and expiry
(RETENTION_URL, RETENTION_REFRESH_SCHEDULE, RETENTION_EXPIRE_SCHEDULE), the alerts function's tick
(ALERTS_URL, ALERTS_TICK_SCHEDULE) and the notify function's delivery job (NOTIFY_URL,
NOTIFY_DELIVER_SCHEDULE); an empty URL leaves its pings out. Schedules are five-field cron
expressions (minute hour day-of-month month day-of-week, UTC).

Run: python -m easysmart.bridges.ping_source
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import orjson
import requests
from croniter import CroniterError, croniter

from easysmart.config import LoggingSettings, PingSourceSettings
from easysmart.errors import EasySmartError
from easysmart.observability import configure_logging

logger = logging.getLogger(__name__)

EVENT_TYPE = "dev.knative.sources.ping"
SOURCE_PREFIX = "/apis/v1/namespaces/default/pingsources/"
_FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")
# The grammar the bridge reads: numbers, '*', lists, ranges and steps. croniter also reads names,
# 'L', '#', 'H' and a seconds field, which the schedules here never use.
_FIELD = re.compile(r"[0-9*,/-]+")
_RANGE = re.compile(r"(\d+)-(\d+)")


class CronError(EasySmartError, ValueError):
    """A cron expression that cannot be read, or a schedule that never fires."""


@dataclass(frozen=True)
class CronSchedule:
    """A five-field cron schedule in UTC, read and evaluated by croniter.

    Day of week 0 and 7 are Sunday. When both day fields are restricted, either one matching is
    enough, as in cron and in Knative's PingSource (robfig/cron): a day field is unrestricted only
    when it is '*' (or '*/1'), so '*/2' in day of month with a weekday means either.
    """

    expression: str

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        fields = expression.split()
        if len(fields) != 5:
            raise CronError(f"{expression!r}: a cron expression has 5 fields, not {len(fields)}")
        for name, text in zip(_FIELD_NAMES, fields):
            if not _FIELD.fullmatch(text):
                raise CronError(f"{name}: cannot read {text!r}")
            # croniter reads a backwards range as one that wraps around; cron refuses it.
            for first, last in _RANGE.findall(text):
                if int(first) > int(last):
                    raise CronError(f"{name}: the range {first}-{last} runs backwards")
        # croniter counts '*/1' as restricted, which would make a weekday alone match every day.
        normalised = " ".join("*" if text == "*/1" else text for text in fields)
        try:
            croniter(normalised)
        except CroniterError as error:
            raise CronError(f"{expression!r}: {error}") from None
        return cls(normalised)

    def matches(self, moment: datetime) -> bool:
        return croniter.match(self.expression, moment)

    def next_after(self, moment: datetime) -> datetime:
        """The first minute after `moment`'s minute that the schedule fires on."""
        try:
            return croniter(self.expression, moment).get_next(datetime)
        except CroniterError as error:
            raise CronError(f"{self.expression!r} never fires: {error}") from None


def ping_headers(name: str, event_id: str | None = None, now: datetime | None = None) -> dict[str, str]:
    """Binary-mode CloudEvent headers of a ping, as a Knative PingSource sends them."""
    return {
        "ce-specversion": "1.0",
        "ce-type": EVENT_TYPE,
        "ce-source": SOURCE_PREFIX + name,
        "ce-id": event_id or str(uuid.uuid4()),
        "ce-time": (now or datetime.now(timezone.utc)).isoformat().replace("+00:00", "Z"),
        "Content-Type": "application/json",
    }


@dataclass(frozen=True)
class Ping:
    """One PingSource: where, when, and the data it sends."""

    url: str
    schedule: CronSchedule
    data: dict


def pings_of(config: PingSourceSettings) -> dict[str, Ping]:
    """The configured pings by PingSource name; one whose URL is empty is left out."""
    wanted = {
        "retention-refresh": (config.retention_url, config.retention_refresh_schedule, {"job": "refresh"}),
        "retention-expire": (config.retention_url, config.retention_expire_schedule, {"job": "expire"}),
        "alerts-tick": (config.alerts_url, config.alerts_tick_schedule, {"job": "tick"}),
        "notify-deliver": (config.notify_url, config.notify_deliver_schedule, {"job": "deliver"}),
    }
    return {name: Ping(url, CronSchedule.parse(cron), data) for name, (url, cron, data) in wanted.items() if url}


class PingSource:
    def __init__(self, pings: dict[str, Ping], timeout_s: float = 600) -> None:
        self.pings = pings
        self.timeout_s = timeout_s
        self.stopping = threading.Event()
        self._senders: dict[str, threading.Thread] = {}

    def send(self, name: str, ping: Ping) -> int:
        try:
            response = requests.post(
                ping.url, data=orjson.dumps(ping.data), headers=ping_headers(name), timeout=self.timeout_s
            )
        except requests.RequestException as error:
            logger.warning("ping not delivered", extra={"ping": name, "error": str(error)})
            return 0
        level = logging.INFO if response.ok else logging.WARNING
        logger.log(level, "ping delivered", extra={"ping": name, "status": response.status_code})
        return response.status_code

    def due(self, moment: datetime) -> list[str]:
        return [name for name, ping in self.pings.items() if ping.schedule.matches(moment)]

    def run(self) -> None:
        moment = datetime.now(timezone.utc)
        while not self.stopping.is_set():
            moment = min(ping.schedule.next_after(moment) for ping in self.pings.values())
            wait = (moment - datetime.now(timezone.utc)).total_seconds()
            if wait > 0 and self.stopping.wait(wait):
                return
            for name in self.due(moment):
                self._start(name)

    def _start(self, name: str) -> None:
        # Each ping on a thread of its own, so a slow target (retention's expiry runs for minutes) delays no other
        # ping; a ping whose previous one is still unanswered is skipped rather than piled up.
        previous = self._senders.get(name)
        if previous is not None and previous.is_alive():
            logger.warning("ping skipped: the previous one is still unanswered", extra={"ping": name})
            return
        sender = threading.Thread(target=self.send, args=(name, self.pings[name]), name=name, daemon=True)
        self._senders[name] = sender
        sender.start()


def main() -> None:
    configure_logging("ping-bridge", LoggingSettings.from_env())
    source = PingSource(pings_of(PingSourceSettings.from_env()))
    signal.signal(signal.SIGTERM, lambda *_: source.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: source.stopping.set())
    logger.info("ping source started", extra={"pings": {name: ping.url for name, ping in source.pings.items()}})
    source.run()


if __name__ == "__main__":
    main()
