"""The JSON log line (easysmart.observability.JsonFormatter): its time, fields and context ids."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import orjson

from easysmart.observability import JsonFormatter, batch_id_var, request_id_var, tenant_id_var


def record_at(created: float, message: str = "upload accepted", **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("easysmart.ingest", logging.INFO, __file__, 1, message, (), None)
    record.created, record.msecs = created, (created - int(created)) * 1000
    record.__dict__.update(extra)
    return record


def test_each_line_is_stamped_with_its_records_utc_time_to_the_millisecond():
    formatter = JsonFormatter()
    midnight = datetime(2026, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp()

    stamps = [
        orjson.loads(formatter.format(record_at(midnight + offset)))["time"]
        for offset in (0.25, 0.999, 1.0, 1.5, 0.5, 86400 * 365 + 0.125)
    ]

    assert stamps == [
        "2026-12-31T23:59:59.250Z",
        "2026-12-31T23:59:59.999Z",
        "2027-01-01T00:00:00.000Z",
        "2027-01-01T00:00:00.500Z",
        "2026-12-31T23:59:59.500Z",  # an earlier second again (a thread's record formatted late)
        "2027-12-31T23:59:59.125Z",
    ]


def test_a_line_carries_the_message_the_requests_ids_and_the_extras_in_order():
    tokens = [request_id_var.set("r-1"), batch_id_var.set("b-1"), tenant_id_var.set("t-1")]
    try:
        line = JsonFormatter().format(record_at(0.0, items=1, readings=40, service="ingest", _private="no"))
    finally:
        for var, token in zip((request_id_var, batch_id_var, tenant_id_var), tokens):
            var.reset(token)

    assert line == (
        '{"time":"1970-01-01T00:00:00.000Z","level":"info","logger":"easysmart.ingest","message":"upload accepted",'
        '"request_id":"r-1","batch_id":"b-1","tenant_id":"t-1","items":1,"readings":40,"service":"ingest"}'
    )
