"""Structured JSON logs carrying request, batch, tenant and trace ids; Prometheus metrics."""

from __future__ import annotations

import contextvars
import logging
import sys
import time

import orjson
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from easysmart.config import LoggingSettings
from easysmart.metrics import METRICS_DIR

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
batch_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("batch_id", default=None)
tenant_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant_id", default=None)

_CONTEXT_FIELDS = (("request_id", request_id_var), ("batch_id", batch_id_var), ("tenant_id", tenant_id_var))
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    # The last second formatted and its text: strftime is a third of a line's formatting, and lines come many a second.
    _second: tuple[int, str] = (-1, "")

    def _time(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        formatted = self._second
        if formatted[0] != second:
            formatted = self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        return f"{formatted[1]}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self._time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, var in _CONTEXT_FIELDS:
            value = var.get()
            if value is not None:
                entry[name] = value
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:  # a traced request (easysmart.tracing), sampled or not
            entry["trace_id"] = format(span_context.trace_id, "032x")
            entry["span_id"] = format(span_context.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(service: str, settings: LoggingSettings) -> None:
    """JSON lines on stderr; idempotent so every entry point may call it."""
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    handler.addFilter(_ServiceFilter(service))


class _ServiceFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        return True


def metrics_response() -> tuple[bytes, int, dict[str, str]]:
    if METRICS_DIR:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, METRICS_DIR)
        return generate_latest(registry), 200, {"Content-Type": CONTENT_TYPE_LATEST}
    return generate_latest(), 200, {"Content-Type": CONTENT_TYPE_LATEST}
