"""Notifications end to end inside the process: the notify function's routes as functions-framework serves them,
the real PostgreSQL and Redis, a webhook receiver and an SMTP server run by the test on 127.0.0.1 (loopback is
allowed by the test's configuration, as on the local stack)."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from aiosmtpd.controller import Controller
from cloudevents.http import CloudEvent
from functions_framework import create_app
from support.clock import SetClock

from easysmart.config import NotifySettings, SmtpSettings
from easysmart.errors import NotFoundError
from easysmart.events import to_http
from easysmart.identity import Principal, TokenService
from easysmart.mail import Mailer
from easysmart.netguard import AddressPolicy
from easysmart.notify import NotifyService, delivery_id_of
from easysmart.outbox import ALERT_ACKNOWLEDGED_TYPE, ALERT_FIRED_TYPE, ALERT_RESOLVED_TYPE
from easysmart.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, WebhookSender, verify

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
TYPES = {"fired": ALERT_FIRED_TYPE, "acknowledged": ALERT_ACKNOWLEDGED_TYPE, "resolved": ALERT_RESOLVED_TYPE}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Receiver:
    """A webhook receiver on 127.0.0.1 that records every request; stop() leaves its port closed, start() reopens it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[tuple[str, dict, bytes]] = []
        self.server: ThreadingHTTPServer | None = None
        self.delay_s = 0.0

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(receiver.delay_s)
                receiver.requests.append((self.path, dict(self.headers), body))
                if self.path.startswith("/redirect"):
                    self.send_response(302)
                    self.send_header("Location", f"http://127.0.0.1:{receiver.port}/landed")
                    self.end_headers()
                elif self.path.startswith("/error"):
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b"SECRET-BODY of the remote")
                else:
                    self.send_response(204)
                    self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def events(self, path: str = "/hook") -> list[dict]:
        return [orjson.loads(body) for request_path, _, body in self.requests if request_path == path]


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"

    def parsed(self):
        return [(to, message_from_bytes(raw, policy=default_policy)) for to, raw in self.messages]


@pytest.fixture
def receiver():
    receiver = Receiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def mailbox():
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield mailbox, controller.port
    controller.stop()


def notify_env(monkeypatch, database_url, redis_url, token_settings, smtp_port: int, allow_loopback: bool = True):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("JWT_SECRET", token_settings.jwt_secret)
    monkeypatch.setenv("NOTIFY_WEBHOOK_ALLOW_LOOPBACK", "true" if allow_loopback else "false")
    monkeypatch.setenv("NOTIFY_PUBLIC_BASE_URL", "https://monitor.example")
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(smtp_port))
    monkeypatch.setenv("SMTP_SECURITY", "none")
    monkeypatch.setenv("SMTP_FROM", "Alertas <alerts@monitor.example>")


@pytest.fixture
def notify(database_url, redis_url, token_settings, mailbox, monkeypatch):
    notify_env(monkeypatch, database_url, redis_url, token_settings, mailbox[1])
    return create_app(target="handle", source=str(FUNCTIONS / "notify" / "main.py")).test_client()


@pytest.fixture
def user(make_account, token_settings):
    """user() -> (tenant_id, Authorization headers) of a user in a fresh tenant."""
    tokens = TokenService(token_settings)

    def make(kind: str = "user") -> tuple[str, dict]:
        account = make_account(kind)
        token = tokens.access_token(Principal(account.account_id, account.tenant_id, kind))
        return account.tenant_id, {"Authorization": f"Bearer {token}"}

    return make


def transition_event(tenant_id: str, alert_id: str, transition: str, sequence: int, **alert) -> CloudEvent:
    data = {
        "tenant_id": tenant_id,
        "timezone": "America/Sao_Paulo",
        "transition": transition,
        "sequence": sequence,
        "alert": {
            "id": alert_id,
            "rule_id": str(uuid.uuid4()),
            "type": "threshold",
            "severity": "critical",
            "state": {"fired": "firing"}.get(transition, transition),
            "equipment_uuid": "eq-1",
            "equipment_name": "Freezer 1",
            "sensor_uuid": "s-1",
            "sensor_name": "Temperatura",
            "sensor_kind": "temperature",
            "unit": "°C",
            "started_at": "2026-12-01T14:00:00+00:00",
            "ended_at": "2026-12-01T15:00:00+00:00" if transition == "resolved" else None,
            "trigger_value": -14.5,
            "peak_value": -12.0,
            "late": False,
            "learnt_at": "2026-12-01T14:10:00+00:00",
            "acknowledged_by": None,
            "acknowledged_at": None,
            "ack_comment": None,
            "rule": {"above": -15.0, "below": None, "for_s": 600, "name": "Freezer quente"},
            **alert,
        },
    }
    attributes = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{alert_id}/{transition}/{sequence}")),
        "type": TYPES[transition],
        "source": "/easysmart/alerts",
        "subject": alert_id,
    }
    return CloudEvent(attributes, data)


def post_event(client, event: CloudEvent):
    headers, body = to_http(event)
    return client.post("/", data=body, headers=headers)


def confirm_from_mail(client, mailbox: Mailbox) -> None:
    (to, message) = mailbox.parsed()[-1]
    text = message.get_body(preferencelist=("plain",)).get_content()
    link = next(line for line in text.splitlines() if "token=" in line)
    token = parse_qs(urlsplit(link).query)["token"][0]
    assert client.get(f"/api/v1/alerts/channels/confirm?token={token}").status_code == 200
    assert client.get(f"/api/v1/alerts/channels/confirm?token={token}").status_code == 404  # single use


def test_fired_sends_one_signed_webhook_and_one_email_and_a_redelivery_sends_nothing(notify, user, receiver, mailbox):
    tenant_id, headers = user()
    hook = notify.post("/api/v1/alerts/channels", json={"type": "webhook", "url": receiver.url()}, headers=headers)
    assert hook.status_code == 201
    secret = hook.get_json()["secret"]
    mail = notify.post("/api/v1/alerts/channels", json={"type": "email", "to": ["ops@example.com"]}, headers=headers)
    assert mail.status_code == 201 and "secret" not in mail.get_json()
    messages, _ = mailbox
    assert len(messages.messages) == 1  # the confirmation, and nothing else until it is followed
    confirm_from_mail(notify, messages)
    alert_id = str(uuid.uuid4())
    event = transition_event(tenant_id, alert_id, "fired", 1)

    reply = post_event(notify, event)

    assert reply.status_code == 200 and reply.get_json()["sent"] == 2
    [(path, request_headers, body)] = receiver.requests
    assert request_headers["Content-Type"].startswith("application/cloudevents+json")
    assert verify(secret, body, request_headers[SIGNATURE_HEADER], now=int(time.time()))
    assert request_headers[DELIVERY_HEADER] == delivery_id_of(alert_id, "fired", 1, hook.get_json()["id"])
    sent = orjson.loads(body)
    assert (sent["id"], sent["type"], sent["subject"], sent["data"]["alert"]["id"]) == (
        event["id"],
        ALERT_FIRED_TYPE,
        alert_id,
        alert_id,
    )
    [(to, alert_mail)] = messages.parsed()[1:]
    assert to == ["ops@example.com"]
    assert "Freezer 1" in str(alert_mail["Subject"])
    assert "Início: 01/12/2026 11:00:00 (America/Sao_Paulo)" in alert_mail.get_body(("plain",)).get_content()

    again = post_event(notify, event)

    assert again.status_code == 200 and again.get_json()["new_deliveries"] == 0
    assert len(receiver.requests) == 1 and len(messages.messages) == 2


def test_an_unconfirmed_recipient_gets_only_the_confirmation(notify, user, mailbox):
    tenant_id, headers = user()
    notify.post("/api/v1/alerts/channels", json={"type": "email", "to": ["new@example.com"]}, headers=headers)
    post_event(notify, transition_event(tenant_id, str(uuid.uuid4()), "fired", 1))
    [(to, message)] = mailbox[0].parsed()
    assert str(message["Subject"]).startswith("Confirme")
    listed = notify.get("/api/v1/alerts/channels", headers=headers).get_json()["channels"]
    assert listed[0]["to"] == [{"address": "new@example.com", "confirmed": False}]
    assert listed[0]["last_delivery"]["state"] == "skipped"


def test_names_with_line_breaks_cannot_inject_headers(notify, user, mailbox):
    tenant_id, headers = user()
    notify.post("/api/v1/alerts/channels", json={"type": "email", "to": ["ops@example.com"]}, headers=headers)
    confirm_from_mail(notify, mailbox[0])
    event = transition_event(
        tenant_id, str(uuid.uuid4()), "fired", 1, equipment_name="Freezer\r\nBcc: victim@example.com\r\n\r\n<b>x</b>"
    )
    post_event(notify, event)
    [(to, message)] = mailbox[0].parsed()[1:]
    assert to == ["ops@example.com"]
    assert message["Bcc"] is None and "\n" not in str(message["Subject"])
    assert "<b>x</b>" not in message.get_body(("html",)).get_content()


def test_another_tenant_never_receives_this_tenants_events_nor_sees_its_channels(notify, user, receiver):
    tenant_a, headers_a = user()
    tenant_b, headers_b = user()
    notify.post("/api/v1/alerts/channels", json={"type": "webhook", "url": receiver.url("/a")}, headers=headers_a)
    hook_b = notify.post(
        "/api/v1/alerts/channels", json={"type": "webhook", "url": receiver.url("/b")}, headers=headers_b
    ).get_json()
    post_event(notify, transition_event(tenant_a, str(uuid.uuid4()), "fired", 1))
    assert [path for path, _, _ in receiver.requests] == ["/a"]
    assert [c["id"] for c in notify.get("/api/v1/alerts/channels", headers=headers_a).get_json()["channels"]] != [
        hook_b["id"]
    ]
    for method, path in (
        ("delete", f"/api/v1/alerts/channels/{hook_b['id']}"),
        ("post", f"/api/v1/alerts/channels/{hook_b['id']}/test"),
        ("post", f"/api/v1/alerts/channels/{hook_b['id']}/rotate"),
    ):
        assert getattr(notify, method)(path, headers=headers_a).status_code == 404


def test_device_tokens_are_refused_and_bad_bodies_answer_422_with_paths(notify, user):
    _, device_headers = user("device")
    assert notify.get("/api/v1/alerts/channels", headers=device_headers).status_code == 403
    _, headers = user()
    cases = [
        ({"type": "sms"}, ["$.type"]),
        ({"type": "email", "to": ["ok@example.com", "not-an-address"]}, ["$.to[1]"]),
        ({"type": "webhook", "url": "ftp://example.com/", "extra": 1}, ["$.extra", "$.url"]),
        ([], ["$"]),
    ]
    for body, paths in cases:
        reply = notify.post("/api/v1/alerts/channels", json=body, headers=headers)
        assert reply.status_code == 422 and reply.get_json()["paths"] == paths


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/hook",
        "http://localhost:9/hook",
    ],
)
def test_webhooks_to_non_public_addresses_are_refused_without_an_allowance(
    database_url, redis_url, token_settings, user, mailbox, monkeypatch, url
):
    notify_env(monkeypatch, database_url, redis_url, token_settings, mailbox[1], allow_loopback=False)
    client = create_app(target="handle", source=str(FUNCTIONS / "notify" / "main.py")).test_client()
    _, headers = user()
    reply = client.post("/api/v1/alerts/channels", json={"type": "webhook", "url": url}, headers=headers)
    assert reply.status_code == 422 and reply.get_json()["paths"] == ["$.url"]


def test_a_test_send_reports_the_outcome_but_never_the_remotes_reply_nor_follows_redirects(notify, user, receiver):
    _, headers = user()
    for path, ok in (("/hook", True), ("/error", False), ("/redirect", False)):
        channel = notify.post(
            "/api/v1/alerts/channels", json={"type": "webhook", "url": receiver.url(path)}, headers=headers
        ).get_json()
        reply = notify.post(f"/api/v1/alerts/channels/{channel['id']}/test", headers=headers)
        assert reply.status_code == 200 and reply.get_json()["ok"] is ok
        assert b"SECRET-BODY" not in reply.data
    assert [path for path, _, _ in receiver.requests] == ["/hook", "/error", "/redirect"]  # /landed never called
    listed = notify.get("/api/v1/alerts/channels", headers=headers)
    assert b"SECRET-BODY" not in listed.data


def test_a_rotated_secret_signs_what_follows(notify, user, receiver):
    tenant_id, headers = user()
    channel = notify.post("/api/v1/alerts/channels", json={"type": "webhook", "url": receiver.url()}, headers=headers)
    rotated = notify.post(f"/api/v1/alerts/channels/{channel.get_json()['id']}/rotate", headers=headers).get_json()
    post_event(notify, transition_event(tenant_id, str(uuid.uuid4()), "fired", 1))
    [(_, request_headers, body)] = receiver.requests
    assert verify(rotated["secret"], body, request_headers[SIGNATURE_HEADER], now=int(time.time()))
    assert not verify(channel.get_json()["secret"], body, request_headers[SIGNATURE_HEADER], now=int(time.time()))


# --- Retries, order, reminders: the service with a clock the test moves --------------------------


def make_service(database, smtp_port: int, clock: SetClock, policy=None, resolver=None, **settings) -> NotifyService:
    defaults = dict(
        notify_backoff_base_s=30, notify_backoff_max_s=600, notify_retry_window_s=3600, notify_critical_reminder_s=900
    )
    mailer = Mailer(SmtpSettings(smtp_host="127.0.0.1", smtp_port=smtp_port, smtp_security="none"))
    webhooks = WebhookSender(
        policy or AddressPolicy(allow_loopback=True), timeout_s=2.0, **({"resolver": resolver} if resolver else {})
    )
    return NotifyService(database, NotifySettings(**{**defaults, **settings}), webhooks, mailer, clock=clock)


@pytest.fixture
def service(database, mailbox):
    clock = SetClock()
    return make_service(database, mailbox[1], clock), clock


def test_a_receiver_down_for_a_while_gets_everything_once_in_order_when_back(service, make_account, receiver):
    notifier, clock = service
    account = make_account("user")
    principal = Principal(account.account_id, account.tenant_id, "user")
    notifier.create_channel(principal, orjson.dumps({"type": "webhook", "url": receiver.url()}))
    receiver.stop()  # its port is closed now
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    for alert_id, transition, sequence in (
        (first, "fired", 1),
        (second, "fired", 1),
        (first, "acknowledged", 2),
        (first, "resolved", 3),
    ):
        notifier.receive(transition_event(account.tenant_id, alert_id, transition, sequence, severity="warning"))
        clock.advance(1)
    assert notifier.tick()["sent"] == 0
    clock.advance(600)
    assert notifier.tick() == {"reminders": 0, "confirmations": 0, "sent": 0, "failed_attempts": 1}

    receiver.start()
    clock.advance(600)
    notifier.tick()
    clock.advance(600)
    notifier.tick()

    arrived = [(event["subject"], event["data"]["transition"]) for event in receiver.events()]
    assert sorted(arrived) == sorted(
        [(first, "fired"), (second, "fired"), (first, "acknowledged"), (first, "resolved")]
    )
    assert [transition for alert_id, transition in arrived if alert_id == first] == [
        "fired",
        "acknowledged",
        "resolved",
    ]
    listed = notifier.list_channels(principal, {})["channels"][0]
    assert (listed["pending_deliveries"], listed["failed_deliveries"]) == (0, 0)


def test_a_delivery_out_of_retries_is_marked_failed_and_shown(service, make_account, receiver):
    notifier, clock = service
    account = make_account("user")
    principal = Principal(account.account_id, account.tenant_id, "user")
    notifier.create_channel(principal, orjson.dumps({"type": "webhook", "url": receiver.url()}))
    receiver.stop()
    notifier.receive(transition_event(account.tenant_id, str(uuid.uuid4()), "fired", 1, severity="warning"))
    for _ in range(12):
        clock.advance(601)
        notifier.tick()
    [channel] = notifier.list_channels(principal, {})["channels"]
    assert channel["failed_deliveries"] == 1 and channel["pending_deliveries"] == 0
    assert channel["last_delivery"]["state"] == "failed"
    assert channel["last_delivery"]["reason"] == "connection refused"


def test_an_unacknowledged_critical_alert_is_notified_again_until_acknowledged(service, make_account, receiver):
    notifier, clock = service
    account = make_account("user")
    principal = Principal(account.account_id, account.tenant_id, "user")
    notifier.create_channel(principal, orjson.dumps({"type": "webhook", "url": receiver.url()}))
    alert_id, ended_late = str(uuid.uuid4()), str(uuid.uuid4())
    notifier.receive(transition_event(account.tenant_id, alert_id, "fired", 1))
    notifier.receive(transition_event(account.tenant_id, ended_late, "fired", 1, ended_at="2026-12-01T14:30:00Z"))
    clock.advance(901)
    notifier.tick()
    clock.advance(10)
    notifier.tick()  # not due again yet
    notifier.receive(transition_event(account.tenant_id, alert_id, "acknowledged", 2))
    clock.advance(3600)
    notifier.tick()
    assert [(event["subject"], event["data"]["transition"]) for event in receiver.events()] == [
        (alert_id, "fired"),
        (ended_late, "fired"),
        (alert_id, "reminder"),
        (alert_id, "acknowledged"),
    ]


def snoozed_alert(database, tenant_id: str, until) -> str:
    """An open critical alert of a rule and equipment of the tenant, snoozed until `until`."""
    alert_id, rule_id = str(uuid.uuid4()), str(uuid.uuid4())
    with database.transaction() as cursor:
        cursor.execute(
            "INSERT INTO equipment (tenant_id, uuid, name) VALUES (%s, %s, 'Freezer 1') RETURNING id",
            (tenant_id, f"eq-{alert_id}"),
        )
        equipment_id = cursor.fetchone()[0]
        cursor.execute(
            "INSERT INTO alert_rules (id, tenant_id, type, severity, equipment_id) VALUES (%s, %s, 'silence',"
            " 'critical', %s)",
            (rule_id, tenant_id, equipment_id),
        )
        cursor.execute(
            "INSERT INTO alerts (id, tenant_id, rule_id, type, severity, equipment_id, state, started_at,"
            " snoozed_until) VALUES (%s, %s, %s, 'silence', 'critical', %s, 'firing', now(), %s)",
            (alert_id, tenant_id, rule_id, equipment_id, until),
        )
    return alert_id


def test_a_snoozed_critical_alert_is_reminded_only_once_the_snooze_ends(service, make_account, receiver):
    notifier, clock = service
    account = make_account("user")
    principal = Principal(account.account_id, account.tenant_id, "user")
    notifier.create_channel(principal, orjson.dumps({"type": "webhook", "url": receiver.url()}))
    alert_id = snoozed_alert(notifier.db, account.tenant_id, until=clock() + timedelta(hours=2))
    notifier.receive(transition_event(account.tenant_id, alert_id, "fired", 1))

    clock.advance(3600)  # reminders due since 900 s, held by the snooze
    held = notifier.tick()["reminders"]
    clock.advance(3601)  # the snooze ended
    after = notifier.tick()["reminders"]

    assert (held, after) == (0, 1)
    assert [event["data"]["transition"] for event in receiver.events()] == ["fired", "reminder"]


def test_concurrent_ticks_send_each_delivery_once(database, mailbox, make_account, receiver):
    clock = SetClock()
    workers = [make_service(database, mailbox[1], clock) for _ in range(3)]
    account = make_account("user")
    principal = Principal(account.account_id, account.tenant_id, "user")
    for path in ("/one", "/two"):
        workers[0].create_channel(principal, orjson.dumps({"type": "webhook", "url": receiver.url(path)}))
    receiver.stop()
    for _ in range(10):
        workers[0].receive(transition_event(account.tenant_id, str(uuid.uuid4()), "fired", 1, severity="warning"))
    receiver.start()
    receiver.delay_s = 0.02
    clock.advance(60)

    with ThreadPoolExecutor(max_workers=len(workers)) as pool:
        for ticked in [pool.submit(worker.tick) for worker in workers]:
            ticked.result()
    clock.advance(60)
    workers[1].tick()

    ids = [headers[DELIVERY_HEADER] for _, headers, _ in receiver.requests]
    assert len(ids) == 20 and len(set(ids)) == 20


def test_a_name_that_resolves_elsewhere_by_delivery_time_is_refused_then(database, mailbox, make_account, receiver):
    """DNS rebinding: public when the channel was made, loopback when it is called."""
    answers = {"hooks.rebind.test": ["93.184.216.34"]}
    notifier = make_service(
        database, mailbox[1], SetClock(), policy=AddressPolicy(), resolver=lambda host, port: answers[host]
    )
    account = make_account("user")
    principal = Principal(account.account_id, account.tenant_id, "user")
    notifier.create_channel(
        principal, orjson.dumps({"type": "webhook", "url": f"http://hooks.rebind.test:{receiver.port}/"})
    )
    answers["hooks.rebind.test"] = ["127.0.0.1"]

    notifier.receive(transition_event(account.tenant_id, str(uuid.uuid4()), "fired", 1))

    assert receiver.requests == []
    [channel] = notifier.list_channels(principal, {})["channels"]
    assert "loopback" in channel["last_delivery"]["reason"]


def test_the_call_goes_to_the_checked_address_with_the_name_in_host(database, mailbox, make_account, receiver):
    answers = {"hooks.pinned.test": ["127.0.0.1"]}
    notifier = make_service(database, mailbox[1], SetClock(), resolver=lambda host, port: answers[host])
    account = make_account("user")
    principal = Principal(account.account_id, account.tenant_id, "user")
    url = f"http://hooks.pinned.test:{receiver.port}/hook"
    notifier.create_channel(principal, orjson.dumps({"type": "webhook", "url": url}))
    notifier.receive(transition_event(account.tenant_id, str(uuid.uuid4()), "fired", 1))
    [(_, headers, _)] = receiver.requests
    assert headers["Host"] == f"hooks.pinned.test:{receiver.port}"


def test_a_tenants_emails_past_its_hourly_limit_wait(database, mailbox, make_account, notify):
    clock = SetClock()
    notifier = make_service(database, mailbox[1], clock, notify_email_per_tenant_per_hour=2)
    account = make_account("user")
    principal = Principal(account.account_id, account.tenant_id, "user")
    notifier.create_channel(principal, orjson.dumps({"type": "email", "to": ["ops@example.com"]}))
    confirm_from_mail(notify, mailbox[0])
    for _ in range(2):
        notifier.receive(transition_event(account.tenant_id, str(uuid.uuid4()), "fired", 1, severity="warning"))
    assert len(mailbox[0].messages) == 2  # the confirmation and one alert
    [channel] = notifier.list_channels(principal, {})["channels"]
    assert channel["pending_deliveries"] == 1 and "hourly" in channel["last_delivery"]["reason"]
    clock.advance(3601)
    notifier.tick()
    assert len(mailbox[0].messages) == 3


def test_a_confirmation_link_expires(database, mailbox, make_account):
    clock = SetClock()
    notifier = make_service(database, mailbox[1], clock, notify_confirm_ttl_s=60)
    account = make_account("user")
    principal = Principal(account.account_id, account.tenant_id, "user")
    notifier.create_channel(principal, orjson.dumps({"type": "email", "to": ["late@example.com"]}))
    [(_, message)] = mailbox[0].parsed()
    link = next(line for line in message.get_body(("plain",)).get_content().splitlines() if "token=" in line)
    clock.advance(61)
    with pytest.raises(NotFoundError):
        notifier.confirm_recipient(parse_qs(urlsplit(link).query)["token"][0])


def test_a_deleted_channel_is_gone_with_its_deliveries(notify, user, receiver):
    tenant_id, headers = user()
    channel = notify.post("/api/v1/alerts/channels", json={"type": "webhook", "url": receiver.url()}, headers=headers)
    assert notify.delete(f"/api/v1/alerts/channels/{channel.get_json()['id']}", headers=headers).status_code == 204
    assert notify.get("/api/v1/alerts/channels", headers=headers).get_json()["channels"] == []
    post_event(notify, transition_event(tenant_id, str(uuid.uuid4()), "fired", 1))
    assert receiver.requests == []


def test_a_storm_past_the_channels_rate_is_folded_into_one_digest(database, mailbox, make_account, receiver):
    clock = SetClock()
    notifier = make_service(database, mailbox[1], clock, notify_channel_max_per_window=2)
    account = make_account("user")
    principal = Principal(account.account_id, account.tenant_id, "user")
    notifier.create_channel(principal, orjson.dumps({"type": "webhook", "url": receiver.url()}))
    alerts = [str(uuid.uuid4()) for _ in range(5)]
    for alert_id in alerts:
        notifier.receive(transition_event(account.tenant_id, alert_id, "fired", 1, severity="warning"))
        clock.advance(1)

    notifier.tick()

    single_one, single_two, digest = receiver.events()
    assert [single_one["subject"], single_two["subject"]] == alerts[:2]
    assert digest["type"] == "com.easysmart.alert.digest" and digest["data"]["count"] == 3
    assert [event["subject"] for event in digest["data"]["events"]] == alerts[2:]
    assert receiver.requests[2][1][DELIVERY_HEADER] == digest["id"]
    assert notifier.list_channels(principal, {})["channels"][0]["pending_deliveries"] == 0


@pytest.fixture
def tls_receiver(tmp_path):
    """An HTTPS receiver on 127.0.0.1 whose certificate names hooks.tls.test; (port, CA file)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=hooks.tls.test",
            "-addext",
            "subjectAltName=DNS:hooks.tls.test",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    hosts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            hosts.append(self.headers["Host"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], str(cert), hosts
    server.shutdown()
    server.server_close()


def test_https_webhooks_check_the_certificate_against_the_name_while_connecting_to_the_checked_address(tls_receiver):
    port, ca_file, hosts = tls_receiver
    answers = {"hooks.tls.test": ["127.0.0.1"], "other.tls.test": ["127.0.0.1"]}
    sender = WebhookSender(
        AddressPolicy(allow_loopback=True),
        resolver=lambda host, _: answers[host],
        tls_context=ssl.create_default_context(cafile=ca_file),
    )
    assert sender.post(f"https://hooks.tls.test:{port}/", "secret", b"{}", "d1", int(time.time())).ok
    assert hosts == [f"hooks.tls.test:{port}"]
    refused = sender.post(f"https://other.tls.test:{port}/", "secret", b"{}", "d2", int(time.time()))
    assert not refused.ok and refused.reason.startswith("TLS failed")
