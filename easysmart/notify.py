"""Notifications: a tenant's channels (webhook, e-mail) and the delivery of alert transitions to them.

Each transition (a `com.easysmart.alert.*` CloudEvent) becomes one `notification_deliveries` row per channel of
its tenant: an outbox per channel. The handler of the event inserts the rows, then tries them within a short
budget; whatever is left (a receiver down, a slow one) is retried by the minute tick with exponential backoff
until the retry window ends, when the row is marked failed (visible in `GET /api/v1/alerts/channels`).

- A redelivered event inserts nothing (unique (event id, channel)), and a row marked done is never sent again.
- A worker leases the rows it sends (claimed with FOR UPDATE SKIP LOCKED under the channel's row lock), so two
  workers never send the same row; a row waits while an earlier one of the same alert on that channel is pending,
  so a channel that comes back receives an alert's transitions in order.
- Channels are independent: a failure stops that channel's run only, and each has its own backoff.
- E-mail goes only to recipients who confirmed (a single-use link), within a per-tenant hourly limit.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Mapping
from urllib.parse import urlsplit

import orjson
import psycopg2.extensions
import redis
from cloudevents.http import CloudEvent
from psycopg2.extras import Json

from easysmart.analytics import decode_cursor, encode_cursor, iso, parse_int
from easysmart.authz import Role, require_role
from easysmart.clock import Clock, utc_now
from easysmart.config import NotifySettings
from easysmart.db import Database, one_row
from easysmart.errors import BadRequestError, NotFoundError, UnprocessableError
from easysmart.identity import Principal
from easysmart.mail import (
    DEFAULT_LANGUAGE,
    Mailer,
    MailError,
    render_alert,
    render_confirmation,
    render_digest,
    valid_address,
)
from easysmart.netguard import RefusedDestinationError, resolve
from easysmart.outbox import ALERT_ACKNOWLEDGED_TYPE, ALERT_FIRED_TYPE, ALERT_RESOLVED_TYPE
from easysmart.stream import AlertStreamPublisher
from easysmart.webhooks import Outcome, WebhookSender, new_secret

logger = logging.getLogger(__name__)

TRANSITION_TYPES = {"fired": ALERT_FIRED_TYPE, "acknowledged": ALERT_ACKNOWLEDGED_TYPE, "resolved": ALERT_RESOLVED_TYPE}
REMINDER_TYPE = "com.easysmart.alert.reminder"
TEST_TYPE = "com.easysmart.alert.test"
DIGEST_TYPE = "com.easysmart.alert.digest"
PING_TYPE = "dev.knative.sources.ping"
NOTIFY_SOURCE = "/easysmart/notify"
CONFIRM_PATH = "/api/v1/alerts/channels/confirm"
# X-Easysmart-Delivery ids and reminder event ids derive from this namespace, so they are stable.
_DELIVERY_NAMESPACE = uuid.UUID("3b7f2a9e-5c1d-4e8f-a0b6-9d2c4e6f8a1b")
MAX_CHANNELS_PER_TENANT = 20
MAX_RECIPIENTS = 10
MAX_URL_CHARS = 2048
_LEASE = timedelta(minutes=5)
# An e-mail channel nobody confirmed: its deliveries are skipped, not retried (confirming later sends no backlog).
NO_CONFIRMED_RECIPIENT = "no recipient has confirmed yet"
_CONFIRMATIONS_PER_TICK = 50
_REMINDERS_PER_TICK = 200
# Which language a tenant reads (tenants.language, set over the admin API).
LanguageOf = Callable[[str], str]


def delivery_id_of(alert_id: str, transition: str, sequence: int, channel_id: str) -> str:
    """X-Easysmart-Delivery: the same for every attempt and every redelivery of that transition to that channel."""
    return str(uuid.uuid5(_DELIVERY_NAMESPACE, f"{alert_id}/{transition}/{sequence}/{channel_id}"))


def backoff(attempts: int, base_s: int, max_s: int) -> timedelta:
    """The wait after the `attempts`-th failed attempt: base, doubled per attempt, at most max_s."""
    return timedelta(seconds=min(max_s, base_s * 2 ** min(attempts - 1, 30)))


class InvalidAlertEventError(BadRequestError):
    """An event notify cannot use (400: a KafkaSource dead-letters it rather than retrying)."""

    code = "invalid_alert_event"


@dataclass(frozen=True)
class Transition:
    """An alert transition as the alerts engine publishes it (the event data contract)."""

    event_id: str
    type: str
    source: str
    tenant_id: str
    alert_id: str
    transition: str
    sequence: int
    severity: str
    data: dict
    time: str | None

    @classmethod
    def from_cloudevent(cls, event: CloudEvent) -> Transition:
        data = event.get_data()
        if not isinstance(data, dict) or not isinstance(data.get("alert"), dict):
            raise InvalidAlertEventError("the alert event's data must be an object with an alert")
        alert = data["alert"]
        transition, sequence = data.get("transition"), data.get("sequence")
        if TRANSITION_TYPES.get(str(transition)) != event["type"]:
            raise InvalidAlertEventError(
                f"the event type {event['type']!r} does not match its transition {transition!r}"
            )
        if not isinstance(sequence, int) or isinstance(sequence, bool):
            raise InvalidAlertEventError("the alert event's sequence must be an integer")
        try:
            tenant_id, alert_id = str(uuid.UUID(str(data.get("tenant_id")))), str(uuid.UUID(str(alert.get("id"))))
        except ValueError:
            raise InvalidAlertEventError("the alert event's tenant_id and alert.id must be UUIDs") from None
        return cls(
            str(event["id"]),
            event["type"],
            str(event["source"]),
            tenant_id,
            alert_id,
            str(transition),
            sequence,
            str(alert.get("severity") or "warning"),
            data,
            event.get("time"),
        )

    def structured(self) -> dict:
        """The CloudEvent in structured JSON mode, as a webhook receives it (its id and source unchanged)."""
        event = {
            "specversion": "1.0",
            "id": self.event_id,
            "type": self.type,
            "source": self.source,
            "subject": self.alert_id,
            "datacontenttype": "application/json",
            "data": self.data,
        }
        return {**event, "time": self.time} if self.time else event


@dataclass(frozen=True)
class _Channel:
    id: str
    tenant_id: str
    type: str
    url: str | None
    secret: str | None


@dataclass(frozen=True)
class _Delivery:
    id: int
    delivery_id: str
    event: dict
    created_at: datetime
    attempts: int


class NotifyService:
    def __init__(
        self,
        db: Database,
        settings: NotifySettings,
        webhooks: WebhookSender,
        mailer: Mailer,
        clock: Clock = utc_now,
        language_of: LanguageOf | None = None,
        live: AlertStreamPublisher | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.webhooks = webhooks
        self.mailer = mailer
        self.clock = clock
        self.language_of = language_of or self._tenant_language
        self.live = live

    def _tenant_language(self, tenant_id: str) -> str:
        with self.db.transaction() as cursor:
            cursor.execute("SELECT language FROM tenants WHERE id = %s", (tenant_id,))
            row = cursor.fetchone()
        return row[0] if row else DEFAULT_LANGUAGE

    # --- Channels through the API ------------------------------------------------------------------

    def list_channels(self, principal: Principal, args: Mapping[str, str]) -> dict:
        require_role(principal, Role.VIEWER)
        limit = parse_int("limit", args.get("limit"), 100, 1, 1000)
        after = decode_cursor(args.get("cursor"), "c", (str, str))
        with self.db.transaction() as cursor:
            cursor.execute(
                "SELECT c.id, c.type, c.url, c.created_at,"
                " (SELECT count(*) FROM notification_deliveries d WHERE d.channel_id = c.id AND d.state = 'pending'),"
                " (SELECT count(*) FROM notification_deliveries d WHERE d.channel_id = c.id AND d.state = 'failed'),"
                " l.state, l.attempts, l.last_status, l.last_error, l.finished_at, l.next_attempt_at"
                " FROM notification_channels c LEFT JOIN LATERAL (SELECT * FROM notification_deliveries d"
                "  WHERE d.channel_id = c.id ORDER BY d.id DESC LIMIT 1) l ON true"
                " WHERE c.tenant_id = %s"
                + (" AND (c.created_at, c.id) > (%s, %s)" if after else "")
                + " ORDER BY c.created_at, c.id LIMIT %s",
                (principal.tenant_id, *(after or ()), limit + 1),
            )
            rows = cursor.fetchall()
            page, more = rows[:limit], len(rows) > limit
            cursor.execute(
                "SELECT channel_id, address, confirmed_at FROM email_recipients WHERE channel_id = ANY(%s)"
                " ORDER BY channel_id, address",
                ([row[0] for row in page],),
            )
            recipients: dict[str, list[dict]] = {}
            for channel_id, address, confirmed_at in cursor.fetchall():
                recipients.setdefault(str(channel_id), []).append(
                    {"address": address, "confirmed": confirmed_at is not None}
                )
        channels = []
        for channel_id, kind, url, created_at, pending, failed, state, attempts, status, error, finished, due in page:
            channel: dict = {"id": str(channel_id), "type": kind, "created_at": iso(created_at)}
            if kind == "webhook":
                channel["url"] = redacted_url(url)
            else:
                channel["to"] = recipients.get(str(channel_id), [])
            channel["pending_deliveries"] = pending
            channel["failed_deliveries"] = failed
            channel["last_delivery"] = (
                None
                if state is None
                else {
                    "state": state,
                    "attempts": attempts,
                    "status_class": f"{status // 100}xx" if status else None,
                    "reason": error,
                    "finished_at": iso(finished),
                    "next_attempt_at": iso(due) if state == "pending" else None,
                }
            )
            channels.append(channel)
        last = page[-1] if page else None
        return {
            "channels": channels,
            "next_cursor": encode_cursor("c", iso(last[3]), str(last[0])) if more and last else None,
        }

    def create_channel(self, principal: Principal, body: bytes) -> dict:
        require_role(principal, Role.ADMIN)
        spec = self._channel_spec(body)
        channel_id = str(uuid.uuid4())
        secret = new_secret() if spec["type"] == "webhook" else None
        with self.db.transaction() as cursor:
            # One creation at a time per tenant, so the limit holds.
            cursor.execute("SELECT 1 FROM tenants WHERE id = %s FOR UPDATE", (principal.tenant_id,))
            cursor.execute("SELECT count(*) FROM notification_channels WHERE tenant_id = %s", (principal.tenant_id,))
            if one_row(cursor)[0] >= MAX_CHANNELS_PER_TENANT:
                raise UnprocessableError(
                    f"a tenant may have at most {MAX_CHANNELS_PER_TENANT} channels; delete one first", paths=["$"]
                )
            cursor.execute(
                "INSERT INTO notification_channels (id, tenant_id, type, url, secret, created_at)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (channel_id, principal.tenant_id, spec["type"], spec.get("url"), secret, self.clock()),
            )
            for address in spec.get("to", []):
                cursor.execute(
                    "INSERT INTO email_recipients (channel_id, address) VALUES (%s, %s)", (channel_id, address)
                )
        answer: dict = {"id": channel_id, "type": spec["type"]}
        if secret is not None:
            answer.update(url=spec["url"], secret=secret)
        else:
            answer["to"] = [{"address": address, "confirmed": False} for address in spec["to"]]
            self.send_confirmations(channel_id=channel_id)
        return answer

    def delete_channel(self, principal: Principal, channel_id: str) -> None:
        require_role(principal, Role.ADMIN)
        with self.db.transaction() as cursor:
            cursor.execute(
                "DELETE FROM notification_channels WHERE id = %s AND tenant_id = %s RETURNING id",
                (_channel_uuid(channel_id), principal.tenant_id),
            )
            if cursor.fetchone() is None:
                raise NotFoundError(f"channel {channel_id} not found")

    def rotate_secret(self, principal: Principal, channel_id: str) -> dict:
        """A new signing secret, answered this once; the old one stops signing at once."""
        require_role(principal, Role.ADMIN)
        secret = new_secret()
        with self.db.transaction() as cursor:
            cursor.execute(
                "UPDATE notification_channels SET secret = %s WHERE id = %s AND tenant_id = %s AND type = 'webhook'"
                " RETURNING id",
                (secret, _channel_uuid(channel_id), principal.tenant_id),
            )
            if cursor.fetchone() is None:
                raise NotFoundError(f"webhook channel {channel_id} not found")
        return {"id": channel_id, "secret": secret}

    def test_channel(self, principal: Principal, channel_id: str) -> dict:
        """Sends a test notification now; says whether it arrived, never what the remote answered."""
        require_role(principal, Role.ADMIN)
        with self.db.transaction() as cursor:
            channel = self._channel(cursor, _channel_uuid(channel_id), principal.tenant_id)
        if channel is None:
            raise NotFoundError(f"channel {channel_id} not found")
        if channel.type == "email" and self._email_budget_spent(channel.tenant_id, 0):
            return {"ok": False, "status_class": None, "reason": "the tenant sent its hourly e-mails; try later"}
        now = self.clock()
        event = {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "type": TEST_TYPE,
            "source": NOTIFY_SOURCE,
            "subject": channel.id,
            "time": iso(now),
            "datacontenttype": "application/json",
            "data": {"tenant_id": channel.tenant_id, "transition": "test", "alert": {"severity": "warning"}},
        }
        outcome = self._send(channel, str(uuid.uuid4()), event)
        answer: dict = {"ok": outcome.ok, "status_class": f"{outcome.status // 100}xx" if outcome.status else None}
        if not outcome.ok:
            answer["reason"] = outcome.reason
        return answer

    def confirm_recipient(self, token: str | None) -> dict:
        """Public: the link of a confirmation message. Single use, and only before it expires."""
        if not token or len(token) > 200:
            raise NotFoundError("this confirmation link is not valid")
        digest = hashlib.sha256(token.encode()).digest()
        with self.db.transaction() as cursor:
            cursor.execute(
                "UPDATE email_recipients SET confirmed_at = %s, token_sha256 = NULL, token_expires_at = NULL"
                " WHERE token_sha256 = %s AND token_expires_at > %s AND confirmed_at IS NULL RETURNING address",
                (self.clock(), digest, self.clock()),
            )
            row = cursor.fetchone()
        if row is None:
            raise NotFoundError("this confirmation link is not valid, was used already or has expired")
        return {"confirmed": row[0]}

    def _channel_spec(self, body: bytes) -> dict:
        try:
            spec = orjson.loads(body or b"null")
        except orjson.JSONDecodeError as error:
            raise BadRequestError(f"the body is not valid JSON: {error}") from None
        if not isinstance(spec, dict):
            raise UnprocessableError("the body must be a JSON object", paths=["$"])
        kind = spec.get("type")
        allowed = {"webhook": {"type", "url"}, "email": {"type", "to"}}
        if kind not in allowed:
            raise UnprocessableError("$.type: must be webhook or email", paths=["$.type"])
        problems = [f"$.{name}: unknown field" for name in sorted(set(spec) - allowed[kind])]
        if kind == "webhook":
            url = spec.get("url")
            if not isinstance(url, str) or not 0 < len(url) <= MAX_URL_CHARS:
                problems.append(f"$.url: must be a URL of 1 to {MAX_URL_CHARS} characters")
            else:
                try:
                    resolve(url, self.webhooks.policy, self.webhooks.resolver)
                except RefusedDestinationError as error:
                    problems.append(f"$.url: {error.message}")
        else:
            to = spec.get("to")
            if not isinstance(to, list) or not 0 < len(to) <= MAX_RECIPIENTS:
                problems.append(f"$.to: must be a list of 1 to {MAX_RECIPIENTS} e-mail addresses")
            else:
                problems += [
                    f"$.to[{index}]: not an e-mail address"
                    for index, address in enumerate(to)
                    if not isinstance(address, str) or not valid_address(address)
                ]
                if not problems:
                    spec["to"] = list(dict.fromkeys(address.lower() for address in to))
        if problems:
            raise UnprocessableError(
                "the channel cannot be used: " + "; ".join(problems), paths=[p.split(":", 1)[0] for p in problems]
            )
        return spec

    # --- Events ------------------------------------------------------------------------------------

    def receive(self, event: CloudEvent) -> dict:
        """An alert transition (record it, then try its deliveries briefly) or the minute tick."""
        if event["type"] == PING_TYPE:
            data = event.get_data()
            job = data.get("job") if isinstance(data, dict) else None
            if job != "deliver":
                raise InvalidAlertEventError(f"unknown ping job {job!r}; notify runs 'deliver'")
            return self.tick()
        if event["type"] not in TRANSITION_TYPES.values():
            raise InvalidAlertEventError(f"notify does not handle events of type {event['type']!r}")
        transition = Transition.from_cloudevent(event)
        channel_ids = self.record(transition)
        self._add_to_live_stream(transition)
        delivered = self.deliver(channel_ids, self.settings.notify_inline_budget_s) if channel_ids else {}
        return {"event_id": transition.event_id, "new_deliveries": len(channel_ids), **delivered}

    def _add_to_live_stream(self, transition: Transition) -> None:
        """Best effort: the browsers' live stream (easysmart.stream) must not hold up the channels' notifications
        while Redis is down, so the stream misses what arrives then (browsers re-read the alerts on reconnecting)."""
        if self.live is None:
            return
        try:
            self.live.publish(transition.tenant_id, transition.event_id, transition.transition, transition.structured())
        except redis.RedisError:
            logger.warning("the live stream missed an alert transition: Redis failed", exc_info=True)

    def record(self, transition: Transition) -> list[str]:
        """Inserts the transition's deliveries, one per channel of its tenant; the channels that got a new one."""
        now = self.clock()
        event = transition.structured()
        with self.db.transaction() as cursor:
            cursor.execute(
                "INSERT INTO notified_alerts (alert_id, tenant_id, severity, transition, sequence, event,"
                " last_notified_at)"
                " SELECT %(alert)s, id, %(severity)s, %(transition)s, %(sequence)s, %(event)s, %(now)s"
                " FROM tenants WHERE id = %(tenant)s"
                " ON CONFLICT (alert_id) DO UPDATE SET severity = EXCLUDED.severity,"
                " transition = EXCLUDED.transition, sequence = EXCLUDED.sequence, event = EXCLUDED.event,"
                " reminders = 0, last_notified_at = EXCLUDED.last_notified_at"
                " WHERE notified_alerts.sequence < EXCLUDED.sequence"
                " AND notified_alerts.tenant_id = EXCLUDED.tenant_id",
                {
                    "alert": transition.alert_id,
                    "tenant": transition.tenant_id,
                    "severity": transition.severity,
                    "transition": transition.transition,
                    "sequence": transition.sequence,
                    "event": Json(event),
                    "now": now,
                },
            )
            return self._insert_deliveries(
                cursor,
                transition.tenant_id,
                transition.alert_id,
                transition.event_id,
                transition.transition,
                transition.sequence,
                event,
                now,
            )

    def _insert_deliveries(
        self,
        cursor: psycopg2.extensions.cursor,
        tenant_id: str,
        alert_id: str,
        event_id: str,
        transition: str,
        sequence: int,
        event: dict,
        now: datetime,
    ) -> list[str]:
        cursor.execute("SELECT id FROM notification_channels WHERE tenant_id = %s ORDER BY id", (tenant_id,))
        created = []
        for (channel_id,) in cursor.fetchall():
            cursor.execute(
                "INSERT INTO notification_deliveries (delivery_id, event_id, channel_id, tenant_id, alert_id, event,"
                " next_attempt_at, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING RETURNING channel_id",
                (
                    delivery_id_of(alert_id, transition, sequence, str(channel_id)),
                    event_id,
                    channel_id,
                    tenant_id,
                    alert_id,
                    Json(event),
                    now,
                    now,
                ),
            )
            if cursor.fetchone() is not None:
                created.append(str(channel_id))
        return created

    def tick(self) -> dict:
        """The minute tick: reminders of unacknowledged critical alerts, confirmations, then due deliveries."""
        reminders = self.remind()
        confirmations = self.send_confirmations()
        with self.db.transaction() as cursor:
            cursor.execute(
                "SELECT channel_id FROM notification_deliveries WHERE state = 'pending' AND next_attempt_at <= %s"
                " GROUP BY channel_id ORDER BY min(next_attempt_at) LIMIT %s",
                (self.clock(), self.settings.notify_tick_max_channels),
            )
            channel_ids = [str(row[0]) for row in cursor.fetchall()]
        settings = self.settings
        delivered = self.deliver(channel_ids, settings.notify_tick_budget_s, settings.notify_tick_workers, fold=True)
        return {"reminders": reminders, "confirmations": confirmations, **delivered}

    def remind(self) -> int:
        """Notifies again every critical alert still firing unacknowledged NOTIFY_CRITICAL_REMINDER_S after its
        last notification, unless a user snoozed it (alerts.snoozed_until): then at the first tick after the snooze."""
        interval = self.settings.notify_critical_reminder_s
        if interval <= 0:
            return 0
        now = self.clock()
        with self.db.transaction() as cursor:
            cursor.execute(
                "SELECT n.alert_id, n.tenant_id, n.reminders, n.event FROM notified_alerts n"
                " WHERE n.transition = 'fired' AND n.severity = 'critical' AND n.last_notified_at <= %s"
                " AND n.event->'data'->'alert'->>'ended_at' IS NULL"
                " AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.id = n.alert_id AND a.snoozed_until > %s)"
                " ORDER BY n.last_notified_at LIMIT %s FOR UPDATE OF n SKIP LOCKED",
                (now - timedelta(seconds=interval), now, _REMINDERS_PER_TICK),
            )
            rows = cursor.fetchall()
            for alert_id, tenant_id, reminders, fired in rows:
                number = reminders + 1
                event_id = str(uuid.uuid5(_DELIVERY_NAMESPACE, f"{alert_id}/reminder/{number}"))
                data = {**fired["data"], "transition": "reminder", "reminder": number}
                event = {
                    **fired,
                    "id": event_id,
                    "type": REMINDER_TYPE,
                    "source": NOTIFY_SOURCE,
                    "time": iso(now),
                    "data": data,
                }
                self._insert_deliveries(cursor, str(tenant_id), str(alert_id), event_id, "reminder", number, event, now)
                cursor.execute(
                    "UPDATE notified_alerts SET reminders = %s, last_notified_at = %s WHERE alert_id = %s",
                    (number, now, alert_id),
                )
        return len(rows)

    # --- Delivery ----------------------------------------------------------------------------------

    def deliver(self, channel_ids: list[str], budget_s: float, workers: int = 1, fold: bool = False) -> dict:
        """Sends the due deliveries of these channels, each channel on its own, starting none after budget_s.
        Past a channel's rate, `fold` sends what is due as one digest; otherwise it is left to the tick."""
        deadline = time.monotonic() + budget_s
        totals = {"sent": 0, "failed_attempts": 0}

        def one(channel_id: str) -> tuple[int, int]:
            return self._deliver_channel(channel_id, deadline, fold)

        if workers <= 1 or len(channel_ids) <= 1:
            results = [one(channel_id) for channel_id in channel_ids]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="notify-deliver") as pool:
                results = list(pool.map(one, channel_ids))
        for sent, failed in results:
            totals["sent"] += sent
            totals["failed_attempts"] += failed
        return totals

    def _deliver_channel(self, channel_id: str, deadline: float, fold: bool) -> tuple[int, int]:
        """(messages sent, failed attempts) for one channel; the first failure ends its run."""
        if time.monotonic() >= deadline:
            return 0, 0
        channel, claimed = self._claim(channel_id, self.settings.notify_channel_max_per_tick)
        if channel is None or not claimed:
            return 0, 0
        messages = self._messages(channel, claimed, fold)
        sent = 0
        for index, message in enumerate(messages):
            waiting = [delivery for later in messages[index:] for delivery in later]
            if time.monotonic() >= deadline:
                self._release(waiting)
                break
            if channel.type == "email" and self._email_budget_spent(channel.tenant_id, 0):
                self._postpone(waiting, timedelta(minutes=5))
                break
            sent_as, event = self._message_event(channel, message)
            outcome = self._send(channel, sent_as, event, deadline - time.monotonic())
            self._record(message, outcome, sent_as)
            if not outcome.ok:
                self._release(waiting[len(message) :])
                return sent, 1
            sent += 1
        return sent, 0

    def _messages(self, channel: _Channel, claimed: list[_Delivery], fold: bool) -> list[list[_Delivery]]:
        """The claimed deliveries as messages: one each while the channel is within its rate, then (fold) one
        digest of all the rest; without fold the rest is released for the tick to fold."""
        since = self.clock() - timedelta(seconds=self.settings.notify_channel_window_s)
        with self.db.transaction() as cursor:
            cursor.execute(
                "SELECT count(DISTINCT sent_as) FROM notification_deliveries"
                " WHERE channel_id = %s AND state = 'done' AND finished_at > %s",
                (channel.id, since),
            )
            recent = one_row(cursor)[0]
        allowance = max(self.settings.notify_channel_max_per_window - recent, 0)
        singles = [[delivery] for delivery in claimed[:allowance]]
        rest = claimed[allowance:]
        if not rest:
            return singles
        if not fold:
            self._release(rest)
            return singles
        return singles + [rest]

    def _message_event(self, channel: _Channel, message: list[_Delivery]) -> tuple[str, dict]:
        """(X-Easysmart-Delivery, CloudEvent) of a message: the delivery itself, or a digest of several."""
        if len(message) == 1:
            return message[0].delivery_id, message[0].event
        digest_id = str(uuid.uuid5(_DELIVERY_NAMESPACE, "digest/" + ",".join(d.delivery_id for d in message)))
        return digest_id, {
            "specversion": "1.0",
            "id": digest_id,
            "type": DIGEST_TYPE,
            "source": NOTIFY_SOURCE,
            "subject": channel.id,
            "time": iso(self.clock()),
            "datacontenttype": "application/json",
            "data": {
                "tenant_id": channel.tenant_id,
                "transition": "digest",
                "count": len(message),
                "deliveries": [delivery.delivery_id for delivery in message],
                "events": [delivery.event for delivery in message],
            },
        }

    def _claim(self, channel_id: str, limit: int) -> tuple[_Channel | None, list[_Delivery]]:
        """Leases the channel's due deliveries in order, skipping any whose alert has an earlier one still
        pending (it goes first). Nothing when another worker holds the channel."""
        now = self.clock()
        with self.db.transaction() as cursor:
            cursor.execute("SELECT 1 FROM notification_channels WHERE id = %s FOR UPDATE SKIP LOCKED", (channel_id,))
            if cursor.fetchone() is None:
                return None, []
            channel = self._channel(cursor, channel_id)
            cursor.execute(
                "UPDATE notification_deliveries SET leased_until = %(lease)s WHERE id IN ("
                " SELECT d.id FROM notification_deliveries d"
                "  WHERE d.channel_id = %(channel)s AND d.state = 'pending' AND d.next_attempt_at <= %(now)s"
                "  AND (d.leased_until IS NULL OR d.leased_until < %(now)s)"
                "  AND NOT EXISTS (SELECT 1 FROM notification_deliveries e WHERE e.channel_id = d.channel_id"
                "   AND e.alert_id = d.alert_id AND e.state = 'pending' AND e.id < d.id"
                "   AND (e.next_attempt_at > %(now)s OR e.leased_until >= %(now)s))"
                "  ORDER BY d.id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
                " RETURNING id, delivery_id, event, created_at, attempts",
                {"lease": now + _LEASE, "channel": channel_id, "now": now, "limit": limit},
            )
            claimed = sorted((_Delivery(row[0], str(row[1]), *row[2:]) for row in cursor.fetchall()), key=_by_id)
        return channel, claimed

    def _send(self, channel: _Channel, delivery_id: str, event: dict, timeout_s: float = 30.0) -> Outcome:
        if channel.type == "webhook":
            body = orjson.dumps(event)
            now_s = int(self.clock().timestamp())
            secret = str(channel.secret)
            return self.webhooks.post(str(channel.url), secret, body, delivery_id, now_s, max(timeout_s, 1.0))
        with self.db.transaction() as cursor:
            cursor.execute(
                "SELECT address FROM email_recipients WHERE channel_id = %s AND confirmed_at IS NOT NULL"
                " ORDER BY address",
                (channel.id,),
            )
            recipients = [row[0] for row in cursor.fetchall()]
        if not recipients:
            return Outcome(False, reason=NO_CONFIRMED_RECIPIENT)
        base_url, language = self.settings.notify_public_base_url, self.language_of(channel.tenant_id)
        data = event.get("data") or {}
        if event.get("type") == DIGEST_TYPE:
            items = [(item.get("data") or {}, _kind(item.get("data") or {})) for item in data.get("events", [])]
            rendered = render_digest(items, base_url, language)
        else:
            rendered = render_alert(data, _kind(data), base_url, language)
        try:
            self.mailer.send(recipients, rendered, message_id_key=delivery_id)
        except MailError as error:
            return Outcome(False, reason=error.message)
        return Outcome(True)

    def _record(self, message: list[_Delivery], outcome: Outcome, sent_as: str) -> None:
        """What an attempt at a message came to, on each of its deliveries."""
        now = self.clock()
        if not outcome.ok:
            logger.info("message %s (%d deliveries) failed: %s", sent_as, len(message), outcome.reason)
        with self.db.transaction() as cursor:
            for delivery in message:
                attempts = delivery.attempts + 1
                if outcome.ok:
                    state, due = "done", now
                elif outcome.reason == NO_CONFIRMED_RECIPIENT:
                    state, due = "skipped", now
                else:
                    settings = self.settings
                    due = now + backoff(attempts, settings.notify_backoff_base_s, settings.notify_backoff_max_s)
                    expired = due > delivery.created_at + timedelta(seconds=settings.notify_retry_window_s)
                    state = "failed" if expired else "pending"
                cursor.execute(
                    "UPDATE notification_deliveries SET state = %s, attempts = %s, next_attempt_at = %s,"
                    " leased_until = NULL, last_status = %s, last_error = %s, sent_as = %s,"
                    " finished_at = CASE WHEN %s <> 'pending' THEN %s END WHERE id = %s AND state = 'pending'",
                    (
                        state,
                        attempts,
                        due,
                        outcome.status,
                        outcome.reason,
                        sent_as if outcome.ok else None,
                        state,
                        now,
                        delivery.id,
                    ),
                )

    def _release(self, deliveries: list[_Delivery]) -> None:
        if deliveries:
            with self.db.transaction() as cursor:
                cursor.execute(
                    "UPDATE notification_deliveries SET leased_until = NULL WHERE id = ANY(%s)",
                    ([d.id for d in deliveries],),
                )

    def _postpone(self, deliveries: list[_Delivery], wait: timedelta) -> None:
        with self.db.transaction() as cursor:
            cursor.execute(
                "UPDATE notification_deliveries SET leased_until = NULL, next_attempt_at = %s,"
                " last_error = 'the tenant sent its hourly e-mails; waiting' WHERE id = ANY(%s)",
                (self.clock() + wait, [d.id for d in deliveries]),
            )

    def _channel(
        self, cursor: psycopg2.extensions.cursor, channel_id: object, tenant_id: str | None = None
    ) -> _Channel | None:
        cursor.execute(
            "SELECT id, tenant_id, type, url, secret FROM notification_channels WHERE id = %s"
            + (" AND tenant_id = %s" if tenant_id else ""),
            (channel_id, tenant_id) if tenant_id else (channel_id,),
        )
        row = cursor.fetchone()
        return None if row is None else _Channel(str(row[0]), str(row[1]), row[2], row[3], row[4])

    # --- E-mail confirmations and limits -----------------------------------------------------------

    def _email_budget_spent(self, tenant_id: str, sending: int) -> bool:
        """Whether the tenant sent its hourly e-mails, counting `sending` more not yet recorded."""
        since = self.clock() - timedelta(hours=1)
        with self.db.transaction() as cursor:
            cursor.execute(
                "SELECT (SELECT count(DISTINCT d.sent_as) FROM notification_deliveries d JOIN notification_channels c"
                "  ON c.id = d.channel_id WHERE d.tenant_id = %(tenant)s AND d.state = 'done' AND c.type = 'email'"
                "  AND d.finished_at > %(since)s)"
                " + (SELECT count(*) FROM email_recipients r JOIN notification_channels c ON c.id = r.channel_id"
                "  WHERE c.tenant_id = %(tenant)s AND r.confirmation_sent_at > %(since)s)",
                {"tenant": tenant_id, "since": since},
            )
            sent = one_row(cursor)[0]
        return sent + sending >= self.settings.notify_email_per_tenant_per_hour

    def send_confirmations(self, channel_id: str | None = None) -> int:
        """Sends the confirmation message of recipients who have none yet (each with a fresh single-use link).
        A recipient whose message cannot be sent now is tried again by the next tick."""
        if not self.mailer.configured:
            return 0
        now = self.clock()
        sent: dict[str, int] = {}
        with self.db.transaction() as cursor:
            cursor.execute(
                "SELECT r.channel_id, r.address, c.tenant_id, t.language FROM email_recipients r"
                " JOIN notification_channels c ON c.id = r.channel_id JOIN tenants t ON t.id = c.tenant_id"
                " WHERE r.confirmation_sent_at IS NULL AND r.confirmed_at IS NULL"
                + (" AND r.channel_id = %s" if channel_id else "")
                + " ORDER BY r.channel_id, r.address LIMIT %s FOR UPDATE OF r SKIP LOCKED",
                (channel_id, _CONFIRMATIONS_PER_TICK) if channel_id else (_CONFIRMATIONS_PER_TICK,),
            )
            for recipient_channel, address, tenant_id, language in cursor.fetchall():
                if self._email_budget_spent(str(tenant_id), sent.get(str(tenant_id), 0)):
                    continue
                token = secrets.token_urlsafe(32)
                link = f"{self.settings.notify_public_base_url.rstrip('/')}{CONFIRM_PATH}?token={token}"
                try:
                    self.mailer.send([address], render_confirmation(link, language))
                except MailError as error:
                    logger.info("confirmation to a recipient of channel %s not sent: %s", recipient_channel, error)
                    break
                cursor.execute(
                    "UPDATE email_recipients SET token_sha256 = %s, token_expires_at = %s, confirmation_sent_at = %s"
                    " WHERE channel_id = %s AND address = %s",
                    (
                        hashlib.sha256(token.encode()).digest(),
                        now + timedelta(seconds=self.settings.notify_confirm_ttl_s),
                        now,
                        recipient_channel,
                        address,
                    ),
                )
                sent[str(tenant_id)] = sent.get(str(tenant_id), 0) + 1
        return sum(sent.values())


def redacted_url(url: str) -> str:
    """A webhook URL as listed: its origin only. Chat tools put their credential in the path
    (https://hooks.slack.com/services/T../B../secret), and viewers may list channels."""
    parts = urlsplit(url)
    rest = "/…" if parts.path not in ("", "/") or parts.query else "/"
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{rest}"


def _kind(data: dict) -> str:
    """What an e-mail says happened: the transition (fired, acknowledged, resolved, reminder or test)."""
    kind = str(data.get("transition") or "fired")
    return kind if kind in ("fired", "acknowledged", "resolved", "reminder", "test") else "fired"


def _by_id(delivery: _Delivery) -> int:
    return delivery.id


def _channel_uuid(channel_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(channel_id)
    except ValueError:
        raise NotFoundError(f"channel {channel_id} not found") from None
