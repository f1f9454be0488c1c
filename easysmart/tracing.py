"""OpenTelemetry tracing: one trace per upload, from the front door's traceparent to process's commit.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set (TracingSettings); off, `span` hands out a no-op span
and nothing is created. On, spans go through a BatchSpanProcessor to <endpoint>/v1/traces (OTLP/HTTP).

Sampling is decided where a request enters: a function behind the front door keeps a client's trace id
(so the front door's access log line finds the trace) but draws its own decision at TRACE_SAMPLE_RATIO,
whatever sampled flag the client sent. What follows from that request (the claim check on Kafka, the
kafka-source bridge's delivery, process) follows its parent's decision (ParentBased).

Each process builds its provider on its first span: gunicorn forks its workers after loading the
function, and each worker needs an export thread of its own.

Attributes never carry SQL parameters, usernames or tokens; an error is recorded by its type only
(its message may quote a value).
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Mapping, Protocol

import psycopg2.extensions
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from easysmart.config import ConfigError, TracingSettings
from easysmart.events import ClaimCheck

if TYPE_CHECKING:  # the SDK and the exporter are imported only when tracing is on
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

TRACEPARENT_HEADER = "traceparent"
# A binary-mode CloudEvent's distributed-tracing extension over HTTP and in a Kafka record.
CE_TRACEPARENT_HTTP_HEADER = "ce-traceparent"
CE_TRACEPARENT_KAFKA_HEADER = "ce_traceparent"

_PROPAGATOR = TraceContextTextMapPropagator()
_NO_SPAN = contextlib.nullcontext(INVALID_SPAN)


@dataclass
class _Setup:
    service: str = ""
    settings: TracingSettings | None = None
    exporter: SpanExporter | None = None
    provider: TracerProvider | None = None
    tracer: trace.Tracer | None = None
    pid: int = 0

    @property
    def enabled(self) -> bool:
        return self.settings is not None and bool(self.settings.otel_exporter_otlp_endpoint or self.exporter)


_setup = _Setup()
_lock = threading.Lock()


def configure_tracing(service: str, settings: TracingSettings, exporter: SpanExporter | None = None) -> None:
    """Records what this process traces as `service`; the provider is built on the first span.

    `exporter` replaces the OTLP exporter (tests), and turns tracing on by itself. A later call replaces
    the setup (several functions loaded in one interpreter, as tests do), flushing the spans of the former."""
    global _setup
    if not 0.0 <= settings.trace_sample_ratio <= 1.0:
        raise ConfigError(f"TRACE_SAMPLE_RATIO must be between 0 and 1; got {settings.trace_sample_ratio}")
    with _lock:
        former, _setup = _setup, _Setup(service, settings, exporter)
    if former.provider is not None and former.pid == os.getpid():
        former.provider.shutdown()


def enabled() -> bool:
    """Whether this process traces (an endpoint, or a test's exporter, is configured)."""
    return _setup.enabled


def flush(timeout_ms: int = 10_000) -> None:
    """Exports every ended span now (tests, and before a short-lived process exits)."""
    if _setup.provider is not None and _setup.pid == os.getpid():
        _setup.provider.force_flush(timeout_ms)


def _tracer() -> trace.Tracer:
    setup = _setup
    if setup.tracer is not None and setup.pid == os.getpid():
        return setup.tracer
    with _lock:
        if setup.tracer is None or setup.pid != os.getpid():
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

            assert setup.settings is not None
            endpoint = setup.settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
            provider = TracerProvider(
                sampler=ParentBased(TraceIdRatioBased(setup.settings.trace_sample_ratio)),
                resource=Resource.create({"service.name": setup.service, "service.namespace": "easysmart"}),
            )
            provider.add_span_processor(BatchSpanProcessor(setup.exporter or OTLPSpanExporter(endpoint=endpoint)))
            setup.provider, setup.tracer, setup.pid = provider, provider.get_tracer("easysmart"), os.getpid()
        return setup.tracer


def _remote_context(traceparent: str | None) -> SpanContext | None:
    if not traceparent:
        return None
    parent = trace.get_current_span(_PROPAGATOR.extract({TRACEPARENT_HEADER: traceparent})).get_span_context()
    return parent if parent.is_valid else None


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int | float | bool] | None = None,
    parent: str | None = None,
) -> contextlib.AbstractContextManager[Span]:
    """A span around a block, current inside it; a no-op span when tracing is off.

    `parent` (a traceparent) is the parent when no span is current, as when a claim check is handled
    outside a traced request; the sampling decision follows it."""
    if not _setup.enabled:
        return _NO_SPAN
    current = trace.get_current_span()
    if current.get_span_context().is_valid and not current.is_recording():
        # Within a trace not sampled nothing is recorded: the request's span (its ids in the log lines and the
        # claim check) stands for the block, so an unsampled upload costs one span, not one per phase.
        return contextlib.nullcontext(current)
    context: Context | None = None
    if parent and not current.get_span_context().is_valid:
        remote = _remote_context(parent)
        if remote is not None:
            context = trace.set_span_in_context(NonRecordingSpan(remote))
    return _started(name, kind, attributes, context)


class _Started:
    """A span started on entering the block and current inside it, ended on leaving; an error leaving the block
    marks it failed (by type). What the SDK's start_as_current_span does with use_span, without their generator
    frames, which were ~5 us of the ~18 us of CPU an unsampled request's span cost."""

    __slots__ = ("name", "kind", "attributes", "context", "span", "_token")

    def __init__(
        self,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, str | int | float | bool] | None,
        context: Context | None,
    ) -> None:
        self.name, self.kind, self.attributes, self.context = name, kind, attributes, context

    def __enter__(self) -> Span:
        self.span = _tracer().start_span(
            self.name,
            context=self.context,
            kind=self.kind,
            attributes=self.attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        self._token = otel_context.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(self, error_type: type[BaseException] | None, error: object, traceback: object) -> None:
        try:
            if error_type is not None:
                mark_failed(self.span, error_type.__name__)
        finally:
            otel_context.detach(self._token)
            self.span.end()


def _started(
    name: str, kind: SpanKind, attributes: Mapping[str, str | int | float | bool] | None, context: Context | None
) -> contextlib.AbstractContextManager[Span]:
    return _Started(name, kind, attributes, context)


def mark_failed(current: Span, error_type: str) -> None:
    """Marks the span failed, naming the error's type (or an HTTP status), never its message."""
    current.set_attribute("error.type", error_type)
    current.set_status(trace.Status(trace.StatusCode.ERROR, error_type))


class HeaderSource(Protocol):
    """Request headers looked up by name, whatever its case (werkzeug's Headers)."""

    def get(self, key: str) -> str | None: ...


def server_span(method: str, headers: HeaderSource, parent_decides: bool) -> contextlib.AbstractContextManager[Span]:
    """The span of one HTTP request, a child of its `traceparent` header.

    Unless `parent_decides` (a function only the platform reaches, such as process behind its Kafka source),
    the sampled flag of the header is not taken: the trace id is kept and the decision drawn here."""
    if not _setup.enabled:
        return _NO_SPAN
    traceparent = headers.get(TRACEPARENT_HEADER)
    if parent_decides:
        traceparent = traceparent or headers.get(CE_TRACEPARENT_HTTP_HEADER)
    remote = _remote_context(traceparent)
    context = None
    if remote is not None:
        if not parent_decides:
            assert _setup.settings is not None
            sampled = random.random() < _setup.settings.trace_sample_ratio
            remote = SpanContext(
                remote.trace_id,
                remote.span_id,
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
            )
        context = trace.set_span_in_context(NonRecordingSpan(remote))
    return _started(method, SpanKind.SERVER, {"http.request.method": method}, context)


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, or None when there is none."""
    if not _setup.enabled:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT_HEADER)


def with_traceparent(claim: ClaimCheck) -> ClaimCheck:
    """The claim check carrying the current span's context (the CloudEvents distributed-tracing extension);
    traceparent is not signed, so the signature stays valid."""
    traceparent = current_traceparent()
    return replace(claim, traceparent=traceparent) if traceparent else claim


def with_trace_headers(headers: dict[str, str]) -> dict[str, str]:
    """HTTP headers plus the current span's traceparent, when there is one."""
    traceparent = current_traceparent()
    return {**headers, TRACEPARENT_HEADER: traceparent} if traceparent else headers


def kafka_traceparent(headers: Mapping[str, bytes | None]) -> str | None:
    """The traceparent of a binary-mode CloudEvent Kafka record (its ce_traceparent header)."""
    value = headers.get(CE_TRACEPARENT_KAFKA_HEADER)
    return value.decode("latin-1") if value else None


class TracedCursor(psycopg2.extensions.cursor):
    """A cursor whose every statement is a span (analytics), with the SQL text as db.statement: the statement
    as written, placeholders and all; the parameters never go in."""

    def execute(self, query, vars=None):  # psycopg2's signature
        if not _setup.enabled:
            return super().execute(query, vars)
        attributes = {"db.system": "postgresql"}
        if isinstance(query, str):  # a psycopg2.sql composition may hold literals: its text is left out
            attributes["db.statement"] = query
        operation = query.split(None, 1)[0].upper() if isinstance(query, str) and query.strip() else "SQL"
        with span(f"{operation} postgresql", kind=SpanKind.CLIENT, attributes=attributes):
            return super().execute(query, vars)
