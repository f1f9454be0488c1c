"""ingest: POST /api/v1/telemetry/bulk (and /api/v1/telemetria/bulk), batch status, health."""

from __future__ import annotations

import functools

import flask
import functions_framework
import redis

from easysmart.acceptedbatches import AcceptedBatches, AcceptedRows
from easysmart.claimsig import ClaimKeyring
from easysmart.config import (
    DAY_SECONDS,
    BackendSettings,
    ClaimSigningSettings,
    DatabaseSettings,
    IngestDatabaseTimeouts,
    KafkaSettings,
    LoggingSettings,
    ObjectStoreSettings,
    ProxySettings,
    RateLimits,
    RedisSettings,
    RetentionSettings,
    TokenSettings,
    TracingSettings,
    UploadLimits,
)
from easysmart.db import Database
from easysmart.health import HealthChecks
from easysmart.identity import TokenService, bearer_principal
from easysmart.ingest import IngestService, UploadRequest, counted_upload
from easysmart.ledger import BatchLedger
from easysmart.messaging import ClaimCheckPublisher, KafkaProbe
from easysmart.observability import configure_logging, request_id_var, tenant_id_var
from easysmart.ratelimit import DecompressionBudget, DeferredCharges, RateLimiter
from easysmart.storage import make_blob_store
from easysmart.tracing import configure_tracing
from easysmart.web import ProxyTrust, Reply, Router, client_address

configure_logging("ingest", LoggingSettings.from_env())
configure_tracing("ingest", TracingSettings.from_env())
_PROXY_TRUST = ProxyTrust.from_settings(ProxySettings.from_env())


@functools.cache
def _clients():
    database, kafka, store = DatabaseSettings.from_env(), KafkaSettings.from_env(), ObjectStoreSettings.from_env()
    timeout_s = BackendSettings.from_env().backend_timeout_s
    timeouts = IngestDatabaseTimeouts.from_env()
    db = Database(
        database.database_url,
        database.db_pool_max,
        statement_timeout_s=timeouts.statement_timeout_s,
        lock_timeout_s=timeouts.lock_timeout_s,
    )
    redis_client = redis.Redis.from_url(
        RedisSettings.from_env().redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    blobs = make_blob_store(store, timeout_s)
    publisher = ClaimCheckPublisher(kafka.kafka_bootstrap_servers, kafka.kafka_topic_raw, timeout_s)
    limits, retention = UploadLimits.from_env(), RetentionSettings.from_env()
    budget = DecompressionBudget(redis_client, limits.ingest_device_decompressed_bytes_per_hour)
    service = IngestService(
        limits,
        RateLimits.from_env(),
        retention,
        db,
        blobs,
        publisher,
        RateLimiter(redis_client),
        keyring=ClaimKeyring.from_settings(ClaimSigningSettings.from_env()),
        budget=budget,
        deferred_charges=DeferredCharges(budget),
        accepted=AcceptedBatches(redis_client, retention.blob_retention_days * DAY_SECONDS),
        accepted_rows=AcceptedRows(BatchLedger(db)),
    )
    probe = KafkaProbe(kafka.kafka_bootstrap_servers, kafka.kafka_topic_raw, timeout_s)
    health = HealthChecks.of_backends(db=db, redis_client=redis_client, blobs=blobs, kafka=probe)
    return service, TokenService(TokenSettings.from_env()), health


@counted_upload
def upload(request: flask.Request) -> Reply:
    service, tokens, _ = _clients()
    principal = bearer_principal(request.headers, tokens)
    tenant_id_var.set(principal.tenant_id)
    address = client_address(request, _PROXY_TRUST)
    rate_headers = service.rate_limit(principal, address)
    result = service.upload(
        UploadRequest(
            principal=principal,
            request_id=request_id_var.get() or "",
            content_encoding=request.headers.get("Content-Encoding"),
            content_length=request.content_length,
            body=request.stream,
            budget_checked=True,
        )
    )
    headers = {**rate_headers, "Location": f"/api/v1/telemetry/batches/{result.batch_id}"}
    respond_async = "respond-async" in request.headers.get("Prefer", "").lower()
    if respond_async:
        headers["Preference-Applied"] = "respond-async"
    return Reply(202 if respond_async else 201, result.body(), headers)


def batch_status(request: flask.Request, batch_id: str) -> Reply:
    service, tokens, _ = _clients()
    principal = bearer_principal(request.headers, tokens)
    service.accounts.check(principal)
    return Reply(200, service.batch_status(principal, batch_id))


def liveness(request: flask.Request) -> Reply:
    return Reply(200, {"status": "ok"})


def detailed_health(request: flask.Request) -> Reply:
    report = _clients()[2].run()
    return Reply(200 if report["status"] == "ok" else 503, report)


router = Router("ingest")
router.add("POST", "/api/v1/telemetry/bulk", upload)
router.add("POST", "/api/v1/telemetria/bulk", upload)
router.add("GET", "/api/v1/telemetry/batches/{batch_id}", batch_status)
router.add("GET", "/api/v1/health", liveness)
router.add("GET", "/api/v1/health/detailed", detailed_health)


@functions_framework.http
def handle(request: flask.Request) -> flask.Response:
    return router(request)
