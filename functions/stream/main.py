"""stream: the live stream of a tenant's alert transitions for browsers, as Server-Sent Events, and the tickets
that open it (easysmart.stream).

Each open stream holds one of the worker's threads for up to STREAM_MAX_LIFETIME_S: the function runs gunicorn
with many threads (THREADS, 64 in its manifests) and serves at most STREAM_MAX_PER_WORKER streams per worker,
leaving the other threads for tickets and health checks.
"""

from __future__ import annotations

import functools

import flask
import functions_framework
import redis

from easysmart.accountstate import AccountStates
from easysmart.config import (
    BackendSettings,
    DatabaseSettings,
    LoggingSettings,
    RedisSettings,
    StreamDatabaseTimeouts,
    StreamSettings,
    TokenSettings,
    TracingSettings,
)
from easysmart.db import Database
from easysmart.identity import TokenService, bearer_principal
from easysmart.observability import configure_logging, tenant_id_var
from easysmart.stream import StreamService
from easysmart.tracing import configure_tracing
from easysmart.web import Reply, Router

configure_logging("stream", LoggingSettings.from_env())
configure_tracing("stream", TracingSettings.from_env())


@functools.cache
def _clients() -> tuple[StreamService, TokenService, AccountStates]:
    database, settings = DatabaseSettings.from_env(), StreamSettings.from_env()
    timeouts = StreamDatabaseTimeouts.from_env()
    db = Database(
        database.database_url,
        database.db_pool_max,
        statement_timeout_s=timeouts.statement_timeout_s,
        lock_timeout_s=timeouts.lock_timeout_s,
    )
    timeout_s = BackendSettings.from_env().backend_timeout_s
    redis_url = RedisSettings.from_env().redis_url
    client = redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    # A stream's XREAD blocks up to a heartbeat: its socket waits that long and then some.
    reader = redis.Redis.from_url(
        redis_url, socket_timeout=settings.stream_heartbeat_s + timeout_s, socket_connect_timeout=timeout_s
    )
    service = StreamService(client, reader, settings)
    return service, TokenService(TokenSettings.from_env()), AccountStates(db, client)


def issue_ticket(request: flask.Request) -> Reply:
    service, tokens, states = _clients()
    principal = bearer_principal(request.headers, tokens)
    states.check(principal)
    tenant_id_var.set(principal.tenant_id)
    return Reply(201, service.issue_ticket(principal), {"Cache-Control": "no-store"})


def open_stream(request: flask.Request) -> flask.Response:
    stream = _clients()[0].open(request.args.get("ticket"), request.headers, request.args)
    tenant_id_var.set(stream.owner.tenant_id)
    response = flask.Response(iter(stream), status=200, mimetype="text/event-stream")
    # The WSGI server closes the body when the stream ends or the client leaves: the slot goes back then.
    response.call_on_close(stream.close)
    response.headers["Cache-Control"] = "no-store"
    # nginx (the front doors) passes it on unbuffered even where proxy_buffering is on.
    response.headers["X-Accel-Buffering"] = "no"
    return response


router = Router("stream")
router.add("POST", "/api/v1/alerts/stream/ticket", issue_ticket)
router.add("GET", "/api/v1/alerts/stream", open_stream)


@functions_framework.http
def handle(request: flask.Request) -> flask.Response:
    return router(request)
