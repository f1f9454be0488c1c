"""Replays dead-lettered records back onto their topic: claim checks from telemetry.dlq onto telemetry.raw,
the outbox's events from <topic>.dlq onto <topic>."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import kafka
from kafka.structs import OffsetAndMetadata, TopicPartition

from easysmart.events import DLQ_ERROR_HEADERS, DLQ_SOURCE_HEADER, ERROR_CODE_HEADER, ERROR_DATA_HEADER

logger = logging.getLogger(__name__)

REPLAY_GROUP = "dlq-replay"
_DROPPED_HEADERS = {*DLQ_ERROR_HEADERS, DLQ_SOURCE_HEADER}


def dead_letter_topic(topic: str, raw_topic: str, raw_dlq_topic: str) -> str:
    """Where a topic's records are dead-lettered (by the kafka-source bridge and the KafkaSources): claim checks to
    KAFKA_TOPIC_DLQ, every other topic's to <topic>.dlq."""
    return raw_dlq_topic if topic == raw_topic else f"{topic}.dlq"


@dataclass
class ReplayReport:
    replayed: int = 0
    listed: int = 0


def replay(
    bootstrap_servers: str,
    dlq_topic: str,
    raw_topic: str,
    limit: int | None = None,
    dry_run: bool = False,
    idle_timeout_ms: int = 5000,
    say=print,
) -> ReplayReport:
    """Moves each dead-lettered record (its error headers removed) back to the raw topic.

    The DLQ offset is committed only after the raw topic acknowledged the record; with
    dry_run, records are listed and nothing is committed.
    """
    servers = bootstrap_servers.split(",")
    consumer = kafka.KafkaConsumer(
        dlq_topic,
        bootstrap_servers=servers,
        group_id=REPLAY_GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=idle_timeout_ms,
    )
    producer = None if dry_run else kafka.KafkaProducer(bootstrap_servers=servers, acks="all")
    report = ReplayReport()
    try:
        for record in consumer:
            headers = dict(record.headers or [])
            error = headers.get(ERROR_DATA_HEADER, b"")
            say(
                f"{record.partition}/{record.offset} id={headers.get('ce_id', b'?').decode()} "
                f"status={headers.get(ERROR_CODE_HEADER, b'?').decode()}"
                f" error(base64)={error[:120].decode(errors='replace')}"
            )
            report.listed += 1
            if producer is not None:
                kept = [(k, v) for k, v in (record.headers or []) if k not in _DROPPED_HEADERS]
                producer.send(raw_topic, key=record.key, value=record.value, headers=kept).get(timeout=30)
                consumer.commit(
                    {TopicPartition(record.topic, record.partition): OffsetAndMetadata(record.offset + 1, "", -1)}
                )
                report.replayed += 1
            if limit is not None and report.listed >= limit:
                break
    finally:
        consumer.close()
        if producer is not None:
            producer.close()
    return report
