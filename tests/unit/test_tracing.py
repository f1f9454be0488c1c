"""Tracing (easysmart.tracing) with an in-memory exporter: setup, sampling where a request enters, propagation
through the claim check and the bridge, and the trace ids in log lines."""

from __future__ import annotations

import dataclasses
import gzip
import io
import logging

import flask
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import INVALID_SPAN, SpanKind
from support.claims import CLAIM, TEST_KEYRING
from support.fakes import FakeBlobStore, FakeLedger, FakePublisher
from support.logs import LogLines
from support.samples import FIXTURES
from test_kafka_bridge import bridge, record

from easysmart import tracing
from easysmart.config import ConfigError, RateLimits, RetentionSettings, TracingSettings, UploadLimits
from easysmart.events import to_kafka
from easysmart.identity import Principal
from easysmart.ingest import IngestService, UploadRequest
from easysmart.web import Reply, Router

CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN_ID = "00f067aa0ba902b7"
NOT_SAMPLED = f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-00"
SAMPLED = f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"


def trace_to(exporter: InMemorySpanExporter | None, ratio: float = 1.0) -> None:
    tracing.configure_tracing("test", TracingSettings(trace_sample_ratio=ratio), exporter=exporter)


@pytest.fixture
def exporter():
    exporter = InMemorySpanExporter()
    yield exporter
    trace_to(None)  # off again for the other tests


def finished(exporter: InMemorySpanExporter) -> dict:
    tracing.flush()
    return {span.name: span for span in exporter.get_finished_spans()}


def hex_id(value: int, digits: int) -> str:
    return format(value, f"0{digits}x")


@pytest.fixture
def log_lines():
    handler = LogLines()
    logger = logging.getLogger("test.tracing")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)


def app(parent_decides_sampling: bool = False) -> flask.testing.FlaskClient:
    router = Router("test", parent_decides_sampling=parent_decides_sampling)

    def thing(request: flask.Request, thing_id: str) -> Reply:
        logging.getLogger("test.tracing").info("handling")
        return Reply(200, {"id": thing_id})

    router.add("GET", "/things/{thing_id}", thing)
    router.add("POST", "/", thing)
    flask_app = flask.Flask("test")
    flask_app.add_url_rule("/<path:path>", "any", lambda path: router(flask.request), methods=["GET", "POST"])
    flask_app.add_url_rule("/", "root", lambda: router(flask.request), methods=["GET", "POST"])
    return flask_app.test_client()


def test_without_an_endpoint_tracing_is_off_and_builds_nothing(log_lines):
    trace_to(None)

    with tracing.span("anything") as span:
        assert span is INVALID_SPAN
    app().get("/things/1", headers={"traceparent": SAMPLED})

    assert not tracing.enabled() and tracing._setup.provider is None
    assert "trace_id" not in log_lines[0]


def test_a_sample_ratio_outside_0_to_1_is_refused():
    with pytest.raises(ConfigError, match="TRACE_SAMPLE_RATIO"):
        tracing.configure_tracing("test", TracingSettings(otel_exporter_otlp_endpoint="http://x", trace_sample_ratio=2))


def test_a_request_span_is_named_by_its_route_and_keeps_the_clients_trace_id(exporter, log_lines):
    trace_to(exporter)

    app().get("/things/secret-id?ticket=t0ken", headers={"traceparent": NOT_SAMPLED})

    span = finished(exporter)["GET /things/{thing_id}"]
    assert span.kind == SpanKind.SERVER
    assert hex_id(span.context.trace_id, 32) == CLIENT_TRACE_ID
    assert hex_id(span.parent.span_id, 16) == CLIENT_SPAN_ID
    assert span.attributes["http.route"] == "/things/{thing_id}"
    assert span.attributes["http.response.status_code"] == 200
    assert "secret-id" not in str(dict(span.attributes)) and "t0ken" not in str(dict(span.attributes))
    # The client said "not sampled"; the ratio (1.0) decided.
    assert log_lines[0]["trace_id"] == CLIENT_TRACE_ID
    assert log_lines[0]["span_id"] == hex_id(span.context.span_id, 16)


def test_a_clients_sampled_flag_does_not_make_a_request_traced(exporter, log_lines):
    trace_to(exporter, ratio=0.0)

    app().get("/things/1", headers={"traceparent": SAMPLED})

    assert finished(exporter) == {}
    # Not exported, yet the log line still finds the client's trace.
    assert log_lines[0]["trace_id"] == CLIENT_TRACE_ID


@pytest.mark.parametrize("header", ["traceparent", "ce-traceparent"])
def test_behind_the_kafka_source_the_parents_decision_is_followed(exporter, header):
    trace_to(exporter, ratio=0.0)
    client = app(parent_decides_sampling=True)

    client.post("/", headers={header: SAMPLED})
    client.post("/", headers={header: NOT_SAMPLED.replace(CLIENT_SPAN_ID, "1" * 16)})

    spans = exporter.get_finished_spans() if tracing.flush() is None else ()
    assert [hex_id(span.parent.span_id, 16) for span in spans] == [CLIENT_SPAN_ID]


def test_health_probes_and_scrapes_are_not_traced(exporter):
    trace_to(exporter)

    app().get("/")
    app().get("/metrics")

    assert finished(exporter) == {}


def test_log_lines_carry_the_current_spans_ids_and_none_outside(exporter, log_lines):
    trace_to(exporter)
    logger = logging.getLogger("test.tracing")

    with tracing.span("work") as span:
        logger.info("inside")
    logger.info("outside")

    assert log_lines[0]["trace_id"] == hex_id(span.get_span_context().trace_id, 32)
    assert log_lines[0]["span_id"] == hex_id(span.get_span_context().span_id, 16)
    assert "trace_id" not in log_lines[1] and "span_id" not in log_lines[1]


def test_an_error_is_recorded_by_its_type_never_its_message(exporter):
    trace_to(exporter)

    with pytest.raises(ValueError), tracing.span("work"):
        raise ValueError("password=hunter2")

    span = finished(exporter)["work"]
    assert span.attributes["error.type"] == "ValueError"
    assert "hunter2" not in str(dict(span.attributes)) + str(span.status.description) + str(span.events)


@pytest.mark.parametrize("ratio", [1.0, 0.0])
def test_a_span_stops_being_current_when_its_block_is_left_even_by_an_error(exporter, ratio):
    trace_to(exporter, ratio)
    headers = {"traceparent": NOT_SAMPLED}

    with tracing.server_span("POST", headers, parent_decides=False) as request_span:
        with pytest.raises(ValueError), tracing.span("work") as work:
            assert trace.get_current_span() is work
            raise ValueError("no")
        assert trace.get_current_span() is request_span
    assert trace.get_current_span() is INVALID_SPAN

    assert sorted(finished(exporter)) == (["POST", "work"] if ratio else [])


def test_the_claim_check_carries_the_publish_spans_context_and_stays_signed(exporter):
    trace_to(exporter)
    publisher = FakePublisher([])
    service = IngestService(
        UploadLimits(),
        RateLimits(),
        RetentionSettings(),
        None,
        FakeBlobStore([]),
        publisher,
        limiter=None,
        ledger=FakeLedger([]),
        keyring=TEST_KEYRING,
    )
    body = gzip.compress((FIXTURES / "ha-bulk-small.json").read_bytes())
    principal = Principal(account_id="a-1", tenant_id="t-1", kind="device", username="freezer-hub")

    with tracing.span("POST /api/v1/telemetry/bulk"):
        service.upload(UploadRequest(principal, "req-1", "gzip", len(body), io.BytesIO(body)))

    spans = finished(exporter)
    (claim,) = publisher.claims
    publish = spans["publish claim check"]
    assert publish.kind == SpanKind.PRODUCER
    context, flags = claim.traceparent.rsplit("-", 1)
    assert context == f"00-{hex_id(publish.context.trace_id, 32)}-{hex_id(publish.context.span_id, 16)}"
    assert int(flags, 16) & 1  # sampled
    assert {"read upload", "put blob"} <= set(spans)
    TEST_KEYRING.verify(claim)
    # In binary Kafka mode it is the CloudEvents distributed-tracing extension's header.
    assert dict(to_kafka(claim).headers)["ce_traceparent"] == claim.traceparent.encode()


def test_the_bridge_delivers_in_a_child_span_of_the_record_and_passes_its_context_on(exporter):
    trace_to(exporter, ratio=0.0)  # the record's sampled flag decides, not the ratio
    b = bridge([200])
    traced = dataclasses.replace(CLAIM, traceparent=SAMPLED)
    message = to_kafka(traced)
    delivered = record()._replace(value=message.value, headers=list(message.headers.items()))

    assert b.deliver(delivered).delivered

    delivery = finished(exporter)["telemetry.raw deliver"]
    assert delivery.kind == SpanKind.CONSUMER
    assert hex_id(delivery.context.trace_id, 32) == CLIENT_TRACE_ID
    assert hex_id(delivery.parent.span_id, 16) == CLIENT_SPAN_ID
    (posted,) = b.session.posts
    assert posted["traceparent"].startswith(f"00-{CLIENT_TRACE_ID}-{hex_id(delivery.context.span_id, 16)}-")
    assert posted["ce-traceparent"] == SAMPLED


def test_a_claim_check_handled_outside_a_request_is_a_child_of_its_traceparent(exporter):
    trace_to(exporter)

    with tracing.span("process batch", parent=SAMPLED):
        pass
    with tracing.span("request"), tracing.span("process batch", parent=SAMPLED) as inner:
        pass

    first, second, request = exporter.get_finished_spans() if tracing.flush() is None else ()
    assert hex_id(first.parent.span_id, 16) == CLIENT_SPAN_ID
    assert second.parent.span_id == inner.parent.span_id == request.context.span_id


def test_within_an_unsampled_trace_no_span_is_made_for_a_phase(exporter):
    trace_to(exporter, ratio=0.0)
    seen = []

    def handler(request: flask.Request) -> Reply:
        with tracing.span("phase") as phase:
            seen.append((trace.get_current_span(), phase, tracing.current_traceparent()))
        return Reply(200, {})

    router = Router("test", parent_decides_sampling=True)
    router.add("POST", "/", handler)
    flask_app = flask.Flask("unsampled")
    flask_app.add_url_rule("/", "root", lambda: router(flask.request), methods=["POST"])

    flask_app.test_client().post("/", headers={"traceparent": NOT_SAMPLED})

    ((request_span, phase, traceparent),) = seen
    assert phase is request_span and not phase.is_recording()
    # The claim check still carries the trace, unsampled: downstream follows.
    assert traceparent.startswith(f"00-{CLIENT_TRACE_ID}-") and traceparent.endswith("-00")
    assert finished(exporter) == {}
