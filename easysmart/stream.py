"""The live stream of alert transitions for browsers: Server-Sent Events fed from a Redis Stream per tenant.

- notify adds every alert transition it receives to `alerts:stream:<tenant_id>` (`AlertStreamPublisher`), the
  CloudEvent a webhook gets; the stream keeps about `STREAM_MAX_LEN` entries of the last `STREAM_WINDOW_S`. An
  event id already added (a redelivery) is not added again: a key per event id lives `STREAM_DEDUP_TTL_S`.
- A browser's EventSource cannot send a token, and tokens must not appear in URLs, so a user first asks for a
  ticket (`POST /api/v1/alerts/stream/ticket`, Bearer token): a random value, bound to its tenant and account,
  kept in Redis (only its SHA-256), redeemed once within `STREAM_TICKET_TTL_S`.
- `GET /api/v1/alerts/stream?ticket=...` redeems the ticket and streams the tenant's entries after the
  `Last-Event-ID` header (or `last_event_id` parameter; none: from now). Each message carries `id:` (the Redis
  stream id), `event:` (fired, acknowledged, resolved) and `data:` (the CloudEvent as JSON). An idle stream sends
  a comment every `STREAM_HEARTBEAT_S`; a stream ends after `STREAM_MAX_LIFETIME_S` and the client reconnects. A
  resume from an id older than what the stream kept first gets an `event: gap` (the client re-reads the alerts).
- Open streams are bounded per account and per tenant (429, counted in Redis) and per worker (503: each open stream
  holds one of the worker's threads).
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import orjson
import redis

from easysmart.authz import Role, require_role
from easysmart.clock import Clock, MonotonicClock, utc_now
from easysmart.config import ConfigError, StreamSettings
from easysmart.errors import BadRequestError, RateLimitedError, UnauthorizedError, UnavailableError
from easysmart.identity import Principal

logger = logging.getLogger(__name__)

STREAM_PATH = "/api/v1/alerts/stream"
# The heartbeat keeps proxies and browsers from closing an idle stream; 30 s is the issue's bound.
MAX_HEARTBEAT_S = 30.0
# What EventSource waits before reconnecting on its own (the web app reconnects with a new ticket instead).
RECONNECT_MS = 3000
_READ_COUNT = 100
GAP_MESSAGE = "transitions after this id left the stream's window; re-read GET /api/v1/alerts"
_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
# How long a counted stream may outlive its lifetime before its slot is taken back (a worker killed mid-stream
# never releases it).
_SLOT_MARGIN_S = 60


def stream_key(tenant_id: str) -> str:
    return f"alerts:stream:{tenant_id}"


def _ticket_key(ticket: str) -> str:
    return "alerts:stream-ticket:" + hashlib.sha256(ticket.encode()).hexdigest()


# Adds the event unless its id was added before; trims by length and age; the key goes when idle for the window.
_PUBLISH = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then return false end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'type', ARGV[4], 'event', ARGV[5])
local now = redis.call('TIME')
local oldest = (tonumber(now[1]) - tonumber(ARGV[3])) * 1000
redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%d', oldest))
redis.call('EXPIRE', KEYS[1], ARGV[3])
return id
"""

# Counts a stream in each of KEYS (sorted sets: member = stream, score = when its slot lapses) unless one is full;
# ARGV: now, when the slot lapses, the stream, the bound of each key, the keys' time to live.
_ACQUIRE = """
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
  if redis.call('ZCARD', key) >= tonumber(ARGV[3 + i]) then return i end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, ARGV[2], ARGV[3])
  redis.call('EXPIRE', key, ARGV[6])
end
return 0
"""


class AlertStreamPublisher:
    """notify's side: adds alert transitions to their tenant's stream."""

    def __init__(self, client: redis.Redis, settings: StreamSettings) -> None:
        self.settings = settings
        self._publish = client.register_script(_PUBLISH)

    def publish(self, tenant_id: str, event_id: str, transition: str, event: dict) -> str | None:
        """The new entry's stream id, or None when this event id was added before. RedisError when Redis fails."""
        added = self._publish(
            keys=[stream_key(tenant_id), f"alerts:stream-added:{event_id}"],
            args=[
                self.settings.stream_dedup_ttl_s,
                self.settings.stream_max_len,
                self.settings.stream_window_s,
                transition,
                orjson.dumps(event),
            ],
        )
        return added.decode() if isinstance(added, bytes) else added


@dataclass(frozen=True)
class Ticket:
    tenant_id: str
    account_id: str


class StreamService:
    """The stream function's side: tickets, and the open streams of a worker."""

    def __init__(
        self,
        client: redis.Redis,
        reader: redis.Redis,
        settings: StreamSettings,
        clock: Clock = utc_now,
        monotonic: MonotonicClock = time.monotonic,
        max_block_ms: int | None = None,
    ) -> None:
        """`client` answers quickly (tickets, counts); `reader` blocks up to a heartbeat in XREAD, so its socket
        timeout must be longer. `max_block_ms` caps each XREAD's wait (tests with a stepping clock)."""
        if not 0 < settings.stream_heartbeat_s <= MAX_HEARTBEAT_S:
            raise ConfigError(f"STREAM_HEARTBEAT_S must be above 0 and at most {MAX_HEARTBEAT_S:g} seconds")
        self.client = client
        self.reader = reader
        self.settings = settings
        self.clock = clock
        self.monotonic = monotonic
        self.max_block_ms = max_block_ms
        self._worker_slots = threading.BoundedSemaphore(settings.stream_max_per_worker)
        self._acquire = client.register_script(_ACQUIRE)

    # --- Tickets ---------------------------------------------------------------------------------------

    def issue_ticket(self, principal: Principal) -> dict:
        require_role(principal, Role.VIEWER)
        ticket = secrets.token_urlsafe(32)
        ttl = self.settings.stream_ticket_ttl_s
        expires_at = self.clock().timestamp() + ttl
        value = orjson.dumps({"tenant_id": principal.tenant_id, "account_id": principal.account_id, "exp": expires_at})
        try:
            self.client.set(_ticket_key(ticket), value, ex=ttl + 5)
        except redis.RedisError as error:
            raise UnavailableError("the live stream is unavailable (Redis); retry later") from error
        return {"ticket": ticket, "expires_in": ttl, "url": f"{STREAM_PATH}?ticket={ticket}"}

    def redeem(self, ticket: str | None) -> Ticket:
        """The ticket's tenant and account; it works once, and not after its time (401 otherwise)."""
        if not ticket:
            raise UnauthorizedError("the stream needs ?ticket= from POST /api/v1/alerts/stream/ticket")
        try:
            raw = self.client.getdel(_ticket_key(ticket))
        except redis.RedisError as error:
            raise UnavailableError("the live stream is unavailable (Redis); retry later") from error
        if raw is None:
            raise UnauthorizedError("unknown, used or expired stream ticket; ask for a new one")
        fields = orjson.loads(raw)
        if self.clock().timestamp() >= fields["exp"]:
            raise UnauthorizedError("unknown, used or expired stream ticket; ask for a new one")
        return Ticket(fields["tenant_id"], fields["account_id"])

    # --- Streams ---------------------------------------------------------------------------------------

    def open(self, ticket: str | None, headers: Mapping[str, str], args: Mapping[str, str]) -> AlertStream:
        """Redeems the ticket and takes a slot (429 past the account's or tenant's bound, 503 past the worker's);
        the caller must close() the stream, which gives the slot back."""
        last_id = (headers.get("Last-Event-ID") or args.get("last_event_id") or "").strip() or None
        if last_id is not None and not _STREAM_ID.match(last_id):
            raise BadRequestError(
                "Last-Event-ID must be an id this stream sent (<ms>-<seq>)", parameter="last_event_id"
            )
        # Before the ticket is spent: a full worker leaves it to another one.
        if not self._worker_slots.acquire(blocking=False):
            raise UnavailableError("this worker serves as many streams as it may; retry", retry_after_s=5)
        try:
            owner = self.redeem(ticket)
            slot = self._take_slot(owner)
        except BaseException:
            self._worker_slots.release()
            raise
        try:
            start = last_id or self._last_id(owner.tenant_id)
            missed = last_id is not None and self._missed_after(owner.tenant_id, last_id)
        except BaseException:
            self._release_slot(owner, slot)
            raise
        return AlertStream(self, owner, slot, start, missed)

    def _take_slot(self, owner: Ticket) -> str:
        now = self.clock().timestamp()
        slot = uuid.uuid4().hex
        lifetime = self.settings.stream_max_lifetime_s + _SLOT_MARGIN_S
        try:
            full = self._acquire(
                keys=[f"alerts:stream-open:account:{owner.account_id}", f"alerts:stream-open:tenant:{owner.tenant_id}"],
                args=[
                    now,
                    now + lifetime,
                    slot,
                    self.settings.stream_max_per_account,
                    self.settings.stream_max_per_tenant,
                    int(lifetime),
                ],
            )
        except redis.RedisError as error:
            raise UnavailableError("the live stream is unavailable (Redis); retry later") from error
        if full:
            whose = "account" if full == 1 else "tenant"
            raise RateLimitedError(f"too many open streams for this {whose}; close one", 30, {})
        return slot

    def _release_slot(self, owner: Ticket, slot: str) -> None:
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.zrem(f"alerts:stream-open:account:{owner.account_id}", slot)
                pipe.zrem(f"alerts:stream-open:tenant:{owner.tenant_id}", slot)
                pipe.execute()
        except redis.RedisError:
            logger.warning("could not release a stream slot; it lapses on its own", exc_info=True)
        finally:
            self._worker_slots.release()

    def _missed_after(self, tenant_id: str, last_id: str) -> bool:
        """Whether entries after `last_id` may have been dropped: it is no longer kept but older than the oldest
        kept (trimmed by length or age), or the whole stream expired after it. Streams lose their oldest entries
        first, so one still kept means nothing after it was lost; "0-0" asks for whatever is kept."""
        if last_id == "0-0":
            return False
        key = stream_key(tenant_id)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.xrange(key, min=last_id, max=last_id, count=1)
                pipe.xrange(key, count=1)
                kept, oldest = pipe.execute()
        except redis.RedisError as error:
            raise UnavailableError("the live stream is unavailable (Redis); retry later") from error
        if kept:
            return False
        if oldest:
            return _id_tuple(last_id) < _id_tuple(oldest[0][0].decode())
        window_starts_ms = (self.clock().timestamp() - self.settings.stream_window_s) * 1000
        return _id_tuple(last_id)[0] < window_starts_ms

    def _last_id(self, tenant_id: str) -> str:
        """The newest entry's id ("0-0" for an empty stream): a stream without Last-Event-ID starts after it."""
        try:
            newest: Any = self.client.xrevrange(stream_key(tenant_id), count=1)
        except redis.RedisError as error:
            raise UnavailableError("the live stream is unavailable (Redis); retry later") from error
        return newest[0][0].decode() if newest else "0-0"


class AlertStream:
    """One open stream: iterate it for the SSE body, then close() it (the WSGI server does, even if the client left)."""

    def __init__(self, service: StreamService, owner: Ticket, slot: str, last_id: str, missed: bool = False) -> None:
        self.service = service
        self.owner = owner
        self.slot = slot
        self.last_id = last_id
        self.missed = missed
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.service._release_slot(self.owner, self.slot)

    def __iter__(self) -> Iterator[bytes]:
        service, settings = self.service, self.service.settings
        key = stream_key(self.owner.tenant_id)
        started = service.monotonic()
        ends = started + settings.stream_max_lifetime_s
        # The first bytes tell the client (and every proxy on the way) that the stream is open.
        yield f"retry: {RECONNECT_MS}\n: stream of tenant alerts open\n\n".encode()
        if self.missed:
            # No id: the client's Last-Event-ID stays where it was.
            yield b"event: gap\ndata: %s\n\n" % orjson.dumps({"after": self.last_id, "message": GAP_MESSAGE})
        quiet_since = started
        while True:
            now = service.monotonic()
            if now >= ends:
                yield b": the stream's lifetime is over; reconnect with Last-Event-ID\n\n"
                return
            wait_s = min(quiet_since + settings.stream_heartbeat_s, ends) - now
            block_ms = max(1, int(wait_s * 1000))
            if service.max_block_ms is not None:
                block_ms = min(block_ms, service.max_block_ms)
            try:
                read: Any = service.reader.xread({key: self.last_id}, count=_READ_COUNT, block=block_ms)
            except redis.RedisError:
                logger.warning("the live stream lost Redis; ending it so the client reconnects", exc_info=True)
                return
            for _, entries in read:
                for entry_id, fields in entries:
                    self.last_id = entry_id.decode()
                    yield sse_message(self.last_id, fields[b"type"].decode(), fields[b"event"])
                    quiet_since = service.monotonic()
            if service.monotonic() - quiet_since >= settings.stream_heartbeat_s:
                yield b": heartbeat\n\n"
                quiet_since = service.monotonic()


def _id_tuple(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def sse_message(entry_id: str, event: str, data: bytes) -> bytes:
    """One Server-Sent Events message (the data is one line of JSON: orjson writes no line breaks)."""
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (entry_id.encode(), event.encode(), data)
