"""retention: refresh the aggregates, then expire old raw data, blobs and ledger rows.

Triggered by PingSource CloudEvents (binary or structured mode; data `{"job": ...}`) or a
plain POST with the same JSON body (or none: every job).
"""

from __future__ import annotations

import functools

import flask
import functions_framework
import orjson

from easysmart.config import (
    AggregateSettings,
    AuditSettings,
    BackendSettings,
    DatabaseSettings,
    LoggingSettings,
    LoginSettings,
    ObjectStoreSettings,
    RetentionDatabaseTimeouts,
    RetentionSettings,
    TracingSettings,
)
from easysmart.db import Database
from easysmart.errors import BadRequestError
from easysmart.events import cloudevent_from_http
from easysmart.observability import configure_logging
from easysmart.retention import BlobExpiry, RetentionService, parse_job
from easysmart.storage import make_s3_client
from easysmart.tracing import configure_tracing
from easysmart.web import Reply, Router

configure_logging("retention", LoggingSettings.from_env())
configure_tracing("retention", TracingSettings.from_env())


@functools.cache
def _service() -> RetentionService:
    database, store = DatabaseSettings.from_env(), ObjectStoreSettings.from_env()
    timeouts = RetentionDatabaseTimeouts.from_env()
    # One run at a time (containerConcurrency 1): a few connections are plenty.
    db = Database(
        database.database_url,
        max_connections=min(database.db_pool_max, 4),
        statement_timeout_s=timeouts.statement_timeout_s,
        lock_timeout_s=timeouts.lock_timeout_s,
    )
    blobs = BlobExpiry(make_s3_client(store, BackendSettings.from_env().backend_timeout_s), store.s3_bucket)
    return RetentionService(
        RetentionSettings.from_env(),
        AggregateSettings.from_env(),
        db,
        blobs,
        partition_lock_timeout_s=timeouts.partition_lock_timeout_s,
        login=LoginSettings.from_env(),
        audit_settings=AuditSettings.from_env(),
    )


def _job(request: flask.Request) -> str:
    raw = request.get_data()
    event = cloudevent_from_http(request.headers, raw)
    if event is not None:
        body = event.get_data()
    elif not raw.strip():
        body = None
    else:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadRequestError('body: not JSON; send {"job": "refresh"|"expire"|"all"}', parameter="body") from None
    if body is None:
        return parse_job(None)
    if not isinstance(body, dict):
        raise BadRequestError("body: must be a JSON object", parameter="body")
    return parse_job(body.get("job"))


def run(request: flask.Request) -> Reply:
    return Reply(200, _service().run(_job(request)))


router = Router("retention")
router.add("POST", "/", run)
router.add("POST", "/run", run)


@functions_framework.http
def handle(request: flask.Request) -> flask.Response:
    return router(request)
