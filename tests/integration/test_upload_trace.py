"""One upload traced end to end: ingest, the claim check through the real Kafka broker, the kafka-source bridge's
delivery and process, up to its telemetry.stored event (functions in-process, this tree's code), exported over
OTLP/HTTP to a receiver in the test that decodes with OpenTelemetry's protobuf classes; and analytics' SQL."""

from __future__ import annotations

import gzip
import logging
import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest
from functions_framework import create_app
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from support.claims import TEST_CLAIM_SETTINGS
from support.logs import LogLines
from support.otlp import OtlpReceiver, ReceivedSpan
from support.samples import recent_sample
from test_claim_signing_kafka import InProcessSink, batch_status

from easysmart import tracing
from easysmart.bridges.kafka_source import KafkaSourceBridge
from easysmart.config import KafkaBridgeSettings, KafkaSettings, TracingSettings
from easysmart.identity import Principal, TokenService

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
CLIENT_TRACE_ID = "5c2a8e0d7b1f4a3e9d6c0b1a2f3e4d5c"
CLIENT_SPAN_ID = "a1b2c3d4e5f60718"


@pytest.fixture
def receiver(monkeypatch):
    with OtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("TRACE_SAMPLE_RATIO", "1")
        yield receiver
        tracing.configure_tracing("test", TracingSettings())  # off again, the last spans exported


@pytest.fixture
def log_lines():
    handler, root = LogLines(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler.lines
    root.removeHandler(handler)
    root.setLevel(level)


def app(name: str):
    return create_app(target="handle", source=str(FUNCTIONS / name / "main.py")).test_client()


def by_name(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    named: dict[str, ReceivedSpan] = {}
    for span in spans:
        assert span.name not in named, f"two spans named {span.name}"
        named[span.name] = span
    return named


def test_one_upload_is_one_trace_from_ingest_through_kafka_and_the_bridge_to_process_commit(
    receiver,
    log_lines,
    database_url,
    redis_url,
    token_settings,
    kafka_settings,
    new_topic,
    database,
    make_account,
    monkeypatch,
):
    raw, dlq = new_topic("test.trace.raw"), new_topic("test.trace.dlq")
    for name, value in {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "JWT_SECRET": token_settings.jwt_secret,
        "KAFKA_TOPIC_RAW": raw,
        "CLAIM_SIGNING_KEY": TEST_CLAIM_SETTINGS.claim_signing_key,
        "CLAIM_SIGNING_KEY_ID": TEST_CLAIM_SETTINGS.claim_signing_key_id,
        "CLAIM_SIGNING_RETIRED_KEYS": ",".join(TEST_CLAIM_SETTINGS.claim_signing_retired_keys),
    }.items():
        monkeypatch.setenv(name, value)
    ingest, process = app("ingest"), app("process")
    device = make_account("device")
    token = TokenService(token_settings).access_token(
        Principal(device.account_id, device.tenant_id, "device", device.username)
    )
    servers = kafka_settings.kafka_bootstrap_servers
    bridge = KafkaSourceBridge(
        KafkaSettings(kafka_bootstrap_servers=servers, kafka_topic_raw=raw, kafka_topic_dlq=dlq),
        KafkaBridgeSettings(sink_url="http://process/", group_id=f"test-{uuid.uuid4().hex}", backoff_base_s=0.01),
        session=InProcessSink(process),
    )

    answer = ingest.post(
        "/api/v1/telemetry/bulk",
        data=gzip.compress(orjson.dumps(recent_sample("ha-bulk-small.json"))),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Encoding": "gzip",
            # As the front door passes it on; "not sampled" is the client's word, which ingest does not take.
            "traceparent": f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-00",
        },
    )
    assert answer.status_code == 201, answer.data
    batch_id = answer.json["batch_id"]
    runner = threading.Thread(target=bridge.run)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while batch_status(database, batch_id) != "done" and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        bridge.stopping.set()
        runner.join(timeout=30)
    assert batch_status(database, batch_id) == "done"
    tracing.flush()

    assert {span.trace_id for span in receiver.spans} == {CLIENT_TRACE_ID}
    spans = by_name(receiver.spans)
    upload, publish = spans["POST /api/v1/telemetry/bulk"], spans["publish claim check"]
    delivery, received, batch = spans[f"{raw} deliver"], spans["POST /"], spans["process batch"]
    # The claim check links ingest's publish to the bridge's delivery, and the delivery to process's request.
    assert upload.parent_span_id == CLIENT_SPAN_ID and upload.kind == Span.SPAN_KIND_SERVER
    assert publish.parent_span_id == upload.span_id and publish.kind == Span.SPAN_KIND_PRODUCER
    assert delivery.parent_span_id == publish.span_id and delivery.kind == Span.SPAN_KIND_CONSUMER
    assert received.parent_span_id == delivery.span_id
    assert batch.parent_span_id == received.span_id
    for name in ("read upload", "put blob"):
        assert spans[name].parent_span_id == upload.span_id
    for name in ("download blob", "parse upload", "normalise and COPY", "log aggregate range", "ledger", "commit"):
        assert spans[name].parent_span_id == batch.span_id
    # The batch's telemetry.stored event carries the trace on to the alerts delivery (the relay sends it as the
    # record's ce_traceparent, which the bridge's delivery continues).
    with database.transaction() as cursor:
        cursor.execute("SELECT traceparent FROM event_outbox WHERE data->>'batch_id' = %s", (batch_id,))
        [(stored_traceparent,)] = cursor.fetchall()
    _, trace_id, parent_id, _ = stored_traceparent.split("-")
    writer = next(span for span in receiver.spans if span.span_id == parent_id)
    assert trace_id == CLIENT_TRACE_ID and batch.span_id in (writer.span_id, writer.parent_span_id)
    attributes = str([span.attributes for span in receiver.spans])
    assert token not in attributes and device.username not in attributes and batch_id not in attributes
    # Ingest's and process's log lines carry the trace id.
    accepted = next(line for line in log_lines if line["message"] == "upload accepted")
    processed = next(line for line in log_lines if line["message"] == "batch processed")
    assert accepted["trace_id"] == processed["trace_id"] == CLIENT_TRACE_ID
    assert accepted["span_id"] == upload.span_id and processed["span_id"] == batch.span_id


def test_analytics_sql_is_traced_by_its_text_never_its_parameters(
    receiver, database_url, redis_url, token_settings, make_account, monkeypatch
):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("JWT_SECRET", token_settings.jwt_secret)
    analytics = app("analytics")
    user = make_account("user")
    token = TokenService(token_settings).access_token(
        Principal(user.account_id, user.tenant_id, "user", user.username, role="owner")
    )

    answer = analytics.get("/api/v1/analytics/equipments", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.data
    tracing.flush()

    (request,) = [span for span in receiver.spans if span.kind == Span.SPAN_KIND_SERVER]
    assert request.name == "GET /api/v1/analytics/equipments"
    statements = [span for span in receiver.spans if span.kind == Span.SPAN_KIND_CLIENT]
    assert statements and all(span.parent_span_id == request.span_id for span in statements)
    assert any("FROM equipment WHERE tenant_id = %s" in span.attributes["db.statement"] for span in statements)
    attributes = str([span.attributes for span in receiver.spans])
    assert user.tenant_id not in attributes and user.account_id not in attributes and token not in attributes
