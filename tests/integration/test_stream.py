"""The browsers' live stream inside the process: tickets, the Server-Sent Events a stream sends, resuming with
Last-Event-ID, heartbeats and lifetimes on an injected clock, the bounds on open streams, against the real Redis;
and notify adding the transitions it receives (NotifyService.receive, the real PostgreSQL) to the tenant's stream."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import orjson
import pytest
import redis
from cloudevents.http import CloudEvent
from functions_framework import create_app
from support.clock import SetClock

from easysmart.config import NotifySettings, SmtpSettings, StreamSettings
from easysmart.errors import BadRequestError, RateLimitedError, UnauthorizedError, UnavailableError
from easysmart.identity import Principal, TokenService
from easysmart.mail import Mailer
from easysmart.netguard import AddressPolicy
from easysmart.notify import NotifyService
from easysmart.outbox import ALERT_ACKNOWLEDGED_TYPE, ALERT_FIRED_TYPE, ALERT_RESOLVED_TYPE
from easysmart.stream import AlertStreamPublisher, StreamService, stream_key
from easysmart.webhooks import WebhookSender

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
TYPES = {"fired": ALERT_FIRED_TYPE, "acknowledged": ALERT_ACKNOWLEDGED_TYPE, "resolved": ALERT_RESOLVED_TYPE}


class SteppingClock(SetClock):
    """A monotonic clock that moves on by `step` seconds each time it is read, so a stream's loop advances
    through time without the test sleeping (each round still waits for Redis's blocking timeout, ~0.1 s)."""

    def __init__(self, step: float) -> None:
        super().__init__()
        self.step = step

    def monotonic(self) -> float:
        self.advance(self.step)
        return super().monotonic()


def make_stream_service(redis_client, clock: SetClock, monotonic=None, **settings) -> StreamService:
    return StreamService(
        redis_client,
        redis_client,
        StreamSettings(**settings),
        clock=clock,
        monotonic=monotonic or clock.monotonic,
        max_block_ms=20,
    )


def transition_event(tenant_id: str, alert_id: str, transition: str, sequence: int) -> CloudEvent:
    data = {
        "tenant_id": tenant_id,
        "transition": transition,
        "sequence": sequence,
        "alert": {"id": alert_id, "type": "threshold", "severity": "warning", "equipment_uuid": "eq-1"},
    }
    attributes = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{alert_id}/{transition}/{sequence}")),
        "type": TYPES[transition],
        "source": "/easysmart/alerts",
        "subject": alert_id,
    }
    return CloudEvent(attributes, data)


def parse_sse(chunks: list[bytes]) -> list[dict]:
    """The messages (id, event, data) of a stream's chunks; comments are dropped."""
    messages = []
    for block in b"".join(chunks).decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "data" in fields:
            messages.append({"id": fields.get("id"), "event": fields["event"], "data": orjson.loads(fields["data"])})
    return messages


def read_messages(stream, count: int) -> list[dict]:
    """Reads the stream until `count` messages came (each chunk of a message comes whole)."""
    chunks: list[bytes] = []
    body = iter(stream)
    while len(parse_sse(chunks)) < count:
        chunks.append(next(body))
    return parse_sse(chunks)


@pytest.fixture
def tenant(make_account, redis_client):
    """tenant() -> a user Principal in a fresh tenant (its stream and stream counts deleted afterwards)."""
    made: list[Principal] = []

    def make(kind: str = "user") -> Principal:
        account = make_account(kind)
        made.append(Principal(account.account_id, account.tenant_id, kind))
        return made[-1]

    yield make
    for principal in made:
        redis_client.delete(
            stream_key(principal.tenant_id),
            f"alerts:stream-open:tenant:{principal.tenant_id}",
            f"alerts:stream-open:account:{principal.account_id}",
        )


@pytest.fixture
def notifier(database, redis_client):
    """A NotifyService that adds what it receives to the live stream (its tenants have no channels)."""
    mailer = Mailer(SmtpSettings(smtp_host="127.0.0.1", smtp_port=1, smtp_security="none"))
    return NotifyService(
        database,
        NotifySettings(),
        WebhookSender(AddressPolicy(allow_loopback=True), timeout_s=1.0),
        mailer,
        live=AlertStreamPublisher(redis_client, StreamSettings()),
    )


def test_a_ticket_opens_one_stream_and_expires_after_a_minute(redis_client, tenant):
    clock = SetClock()
    service = make_stream_service(redis_client, clock)
    user = tenant()

    ticket = service.issue_ticket(user)
    owner = service.redeem(ticket["ticket"])
    with pytest.raises(UnauthorizedError):
        service.redeem(ticket["ticket"])  # single use
    late = service.issue_ticket(user)["ticket"]
    clock.advance(60)
    with pytest.raises(UnauthorizedError):
        service.redeem(late)

    assert (owner.tenant_id, owner.account_id) == (user.tenant_id, user.account_id)
    assert ticket["expires_in"] == 60 and ticket["url"] == f"/api/v1/alerts/stream?ticket={ticket['ticket']}"
    assert service.issue_ticket(user)["ticket"] != ticket["ticket"]


def test_a_stream_receives_the_transition_notify_received_once_even_when_redelivered(redis_client, tenant, notifier):
    clock = SetClock()
    service = make_stream_service(redis_client, clock)
    user = tenant()
    alert_id = str(uuid.uuid4())
    stream = service.open(service.issue_ticket(user)["ticket"], {}, {})

    fired = transition_event(user.tenant_id, alert_id, "fired", 1)
    notifier.receive(fired)
    notifier.receive(fired)  # redelivered
    notifier.receive(transition_event(user.tenant_id, alert_id, "resolved", 3))
    try:
        messages = read_messages(stream, 2)
    finally:
        stream.close()

    assert [m["event"] for m in messages] == ["fired", "resolved"]
    assert messages[0]["data"]["id"] == fired["id"] and messages[0]["data"]["type"] == ALERT_FIRED_TYPE
    assert messages[0]["data"]["data"]["alert"]["id"] == alert_id
    assert redis_client.xlen(stream_key(user.tenant_id)) == 2


def test_reconnecting_with_last_event_id_resumes_without_loss(redis_client, tenant):
    clock = SetClock()
    service = make_stream_service(redis_client, clock)
    publisher = AlertStreamPublisher(redis_client, StreamSettings())
    user = tenant()
    alert_id = str(uuid.uuid4())

    def publish(transition: str, sequence: int) -> None:
        event = transition_event(user.tenant_id, alert_id, transition, sequence)
        publisher.publish(user.tenant_id, event["id"], transition, {"id": event["id"]})

    first = service.open(service.issue_ticket(user)["ticket"], {}, {})
    publish("fired", 1)
    seen = read_messages(first, 1)
    first.close()  # the browser went away
    publish("acknowledged", 2)  # while nobody listened
    publish("resolved", 3)
    second = service.open(service.issue_ticket(user)["ticket"], {"Last-Event-ID": seen[-1]["id"]}, {})
    try:
        resumed = read_messages(second, 2)
    finally:
        second.close()

    assert [m["event"] for m in seen + resumed] == ["fired", "acknowledged", "resolved"]
    assert len({m["id"] for m in seen + resumed}) == 3


def test_a_resume_from_before_what_the_window_kept_is_told_it_missed_transitions(redis_client, tenant):
    clock = SetClock()
    service = make_stream_service(redis_client, clock)
    publisher = AlertStreamPublisher(redis_client, StreamSettings())
    user = tenant()
    ids = [publisher.publish(user.tenant_id, str(uuid.uuid4()), "fired", {"n": n}) for n in range(3)]
    redis_client.xtrim(stream_key(user.tenant_id), maxlen=1, approximate=False)  # as the window drops old ones
    publisher.publish(user.tenant_id, str(uuid.uuid4()), "resolved", {"n": 3})

    def resume(last_id: str) -> list[dict]:
        stream = service.open(service.issue_ticket(user)["ticket"], {"Last-Event-ID": last_id}, {})
        try:
            return read_messages(stream, 1)
        finally:
            stream.close()

    behind, caught_up = resume(ids[0]), resume(ids[2])

    assert [m["event"] for m in behind] == ["gap"] and behind[0]["id"] is None
    assert behind[0]["data"]["after"] == ids[0]
    assert [(m["event"], m["data"]) for m in caught_up] == [("resolved", {"n": 3})]


def test_a_stream_without_last_event_id_starts_at_now_and_a_bad_one_is_400(redis_client, tenant):
    clock = SetClock()
    service = make_stream_service(redis_client, clock)
    publisher = AlertStreamPublisher(redis_client, StreamSettings())
    user = tenant()
    publisher.publish(user.tenant_id, str(uuid.uuid4()), "fired", {"before": True})

    stream = service.open(service.issue_ticket(user)["ticket"], {}, {})
    publisher.publish(user.tenant_id, str(uuid.uuid4()), "resolved", {"before": False})
    try:
        messages = read_messages(stream, 1)
    finally:
        stream.close()
    with pytest.raises(BadRequestError):
        service.open(service.issue_ticket(user)["ticket"], {"Last-Event-ID": "not-an-id"}, {})

    assert [m["data"] for m in messages] == [{"before": False}]


def test_an_idle_stream_sends_a_heartbeat_every_interval_and_ends_after_its_lifetime(redis_client, tenant):
    clock = SteppingClock(step=1.0)
    service = make_stream_service(
        redis_client, clock, clock.monotonic, stream_heartbeat_s=15.0, stream_max_lifetime_s=100
    )
    user = tenant()
    stream = service.open(service.issue_ticket(user)["ticket"], {}, {})
    started = clock.now.timestamp()

    heartbeats, ended = [], None
    try:
        for chunk in stream:
            if chunk == b": heartbeat\n\n":
                heartbeats.append(clock.now.timestamp() - started)
            elif b"lifetime" in chunk:
                ended = clock.now.timestamp() - started
    finally:
        stream.close()

    gaps = [later - earlier for earlier, later in zip([0.0] + heartbeats, heartbeats)]
    assert len(heartbeats) >= 5  # about every 15 s until the lifetime ends the stream at 100 s
    assert all(15.0 <= gap <= 18.0 for gap in gaps), gaps  # a few clock steps late at most
    assert ended is not None and 100.0 <= ended <= 103.0 and ended - heartbeats[-1] <= 18.0


def test_another_tenants_stream_never_sees_this_tenants_transitions(redis_client, tenant, notifier):
    clock = SetClock()
    service = make_stream_service(redis_client, clock)
    ours, theirs = tenant(), tenant()
    their_stream = service.open(service.issue_ticket(theirs)["ticket"], {}, {})
    # Ours reads from the beginning of its stream: nothing but its own transition is there either.
    our_stream = service.open(service.issue_ticket(ours)["ticket"], {"Last-Event-ID": "0-0"}, {})

    notifier.receive(transition_event(ours.tenant_id, str(uuid.uuid4()), "fired", 1))
    notifier.receive(transition_event(theirs.tenant_id, str(uuid.uuid4()), "fired", 1))
    try:
        ours_seen = read_messages(our_stream, 1)
        theirs_seen = read_messages(their_stream, 1)
    finally:
        their_stream.close()
        our_stream.close()

    assert [m["data"]["data"]["tenant_id"] for m in ours_seen] == [ours.tenant_id]
    assert [m["data"]["data"]["tenant_id"] for m in theirs_seen] == [theirs.tenant_id]
    assert redis_client.xlen(stream_key(ours.tenant_id)) == 1


def test_open_streams_are_bounded_per_account_per_tenant_and_per_worker(redis_client, tenant):
    clock = SetClock()
    service = make_stream_service(
        redis_client, clock, stream_max_per_account=2, stream_max_per_tenant=100, stream_max_per_worker=3
    )
    user, other = tenant(), tenant()
    opened = [service.open(service.issue_ticket(user)["ticket"], {}, {}) for _ in range(2)]
    with pytest.raises(RateLimitedError):
        service.open(service.issue_ticket(user)["ticket"], {}, {})
    opened.append(service.open(service.issue_ticket(other)["ticket"], {}, {}))
    unspent = service.issue_ticket(other)["ticket"]
    with pytest.raises(UnavailableError):
        service.open(unspent, {}, {})  # the worker is full; the ticket is not spent
    opened.pop(0).close()
    opened.append(service.open(service.issue_ticket(user)["ticket"], {}, {}))  # the closed one's slots came back
    with pytest.raises(UnavailableError):
        service.open(unspent, {}, {})
    for stream in opened:
        stream.close()
    reopened = service.open(unspent, {}, {})  # the ticket a full worker refused still works
    reopened.close()

    assert redis_client.zcard(f"alerts:stream-open:account:{user.account_id}") == 0
    assert redis_client.zcard(f"alerts:stream-open:tenant:{other.tenant_id}") == 0


def test_a_tenant_bound_counts_every_account_of_the_tenant(redis_client, tenant):
    clock = SetClock()
    service = make_stream_service(redis_client, clock, stream_max_per_tenant=1)
    user = tenant()
    stream = service.open(service.issue_ticket(user)["ticket"], {}, {})
    try:
        with pytest.raises(RateLimitedError) as refused:
            service.open(service.issue_ticket(user)["ticket"], {}, {})
    finally:
        stream.close()
    assert "tenant" in refused.value.message


# --- Through the function, as functions-framework serves it -------------------------------------------------


def stream_app(monkeypatch, database_url: str, redis_url: str, token_settings):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("JWT_SECRET", token_settings.jwt_secret)
    return create_app(target="handle", source=str(FUNCTIONS / "stream" / "main.py")).test_client()


def bearer(token_settings, principal: Principal) -> dict:
    return {"Authorization": f"Bearer {TokenService(token_settings).access_token(principal)}"}


def test_the_function_streams_event_stream_to_a_user_and_refuses_devices(
    monkeypatch, database_url, redis_url, token_settings, tenant, redis_client
):
    client = stream_app(monkeypatch, database_url, redis_url, token_settings)
    user, device = tenant(), tenant("device")

    refused = client.post("/api/v1/alerts/stream/ticket", headers=bearer(token_settings, device))
    no_token = client.post("/api/v1/alerts/stream/ticket")
    ticket = client.post("/api/v1/alerts/stream/ticket", headers=bearer(token_settings, user))
    response = client.get(ticket.json["url"], buffered=False)
    try:
        first = next(iter(response.response))
    finally:
        response.close()
    reused = client.get(ticket.json["url"])

    assert refused.status_code == 403 and no_token.status_code == 401
    assert ticket.status_code == 201 and ticket.headers["Cache-Control"] == "no-store"
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert first.startswith(b"retry: ")
    assert reused.status_code == 401
    # Closing the response gave the stream's slot back.
    assert redis_client.zcard(f"alerts:stream-open:account:{user.account_id}") == 0


def test_redis_down_answers_503_with_retry_after(monkeypatch, database_url, token_settings, tenant):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    client = stream_app(monkeypatch, database_url, f"redis://127.0.0.1:{closed_port}/0", token_settings)
    monkeypatch.setenv("BACKEND_TIMEOUT_S", "0.5")
    user = tenant()

    ticket = client.post("/api/v1/alerts/stream/ticket", headers=bearer(token_settings, user))
    stream = client.get("/api/v1/alerts/stream?ticket=whatever")

    assert ticket.status_code == 503 and int(ticket.headers["Retry-After"]) > 0
    assert stream.status_code == 503 and int(stream.headers["Retry-After"]) > 0


def test_notify_still_records_a_transition_while_the_stream_is_down(database, tenant):
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, socket_timeout=0.5)
    mailer = Mailer(SmtpSettings(smtp_host="127.0.0.1", smtp_port=1, smtp_security="none"))
    notifier = NotifyService(
        database,
        NotifySettings(),
        WebhookSender(AddressPolicy(allow_loopback=True), timeout_s=1.0),
        mailer,
        live=AlertStreamPublisher(down, StreamSettings()),
    )
    user = tenant()
    alert_id = str(uuid.uuid4())

    answer = notifier.receive(transition_event(user.tenant_id, alert_id, "fired", 1))

    with database.transaction() as cursor:
        cursor.execute("SELECT transition FROM notified_alerts WHERE alert_id = %s", (alert_id,))
        assert cursor.fetchall() == [("fired",)]
    assert answer["event_id"]
