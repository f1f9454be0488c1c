"""process: receives the claim-check CloudEvent and writes the upload's readings (docs/architecture.md §3.6, §6)."""

from __future__ import annotations

import functools

import flask
import functions_framework
import redis

from easysmart.claimsig import ClaimKeyring
from easysmart.config import (
    BackendSettings,
    ClaimSigningSettings,
    DatabaseSettings,
    LoggingSettings,
    ObjectStoreSettings,
    ProcessDatabaseTimeouts,
    ProcessSettings,
    RedisSettings,
    RetentionSettings,
    TracingSettings,
    UploadLimits,
)
from easysmart.db import Database
from easysmart.events import from_cloudevent, from_http_request
from easysmart.observability import configure_logging
from easysmart.process import BatchProcessor, counted_claim_check
from easysmart.ratelimit import DecompressionBudget
from easysmart.storage import make_blob_store
from easysmart.tracing import configure_tracing
from easysmart.web import Reply, Router

configure_logging("process", LoggingSettings.from_env())
configure_tracing("process", TracingSettings.from_env())


@functools.cache
def _processor() -> BatchProcessor:
    database, store = DatabaseSettings.from_env(), ObjectStoreSettings.from_env()
    timeouts = ProcessDatabaseTimeouts.from_env()
    timeout_s = BackendSettings.from_env().backend_timeout_s
    # Large blobs stream for a while: the read timeout is per socket read, not per download. A blob is read while
    # its batch holds a database connection: as many at once as the pool holds connections.
    blobs = make_blob_store(store, max(timeout_s, 30.0), max_connections=max(database.db_pool_max, 10))
    redis_client = redis.Redis.from_url(
        RedisSettings.from_env().redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    limits = UploadLimits.from_env()
    return BatchProcessor(
        ProcessSettings.from_env(),
        limits,
        RetentionSettings.from_env(),
        Database(
            database.database_url,
            database.db_pool_max,
            statement_timeout_s=timeouts.statement_timeout_s,
            lock_timeout_s=timeouts.lock_timeout_s,
        ),
        blobs,
        keyring=ClaimKeyring.from_settings(ClaimSigningSettings.from_env()),
        budget=DecompressionBudget(redis_client, limits.ingest_device_decompressed_bytes_per_hour),
    )


@counted_claim_check
def receive(request: flask.Request) -> Reply:
    claim = from_cloudevent(from_http_request(request.headers, request.get_data()))
    result = _processor().process(claim)
    return Reply(200, result.body())


# Only the Kafka source reaches process: its traceparent decides the sampling, made at ingest.
router = Router("process", parent_decides_sampling=True)
router.add("POST", "/", receive)


@functions_framework.http
def handle(request: flask.Request) -> flask.Response:
    return router(request)
