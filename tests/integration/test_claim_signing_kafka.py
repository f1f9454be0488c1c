"""A forged claim check through the real Kafka broker, the kafka-source bridge and the process function (in-process,
this tree's code): it ends on the dead-letter topic with the reason, and a signed one behind it is processed."""

from __future__ import annotations

import base64
import dataclasses
import threading
import time
import uuid
from pathlib import Path

import kafka
import pytest
import requests
from functions_framework import create_app
from support.claims import TEST_CLAIM_SETTINGS, stage
from support.samples import recent_sample

from easysmart.bridges.kafka_source import KafkaSourceBridge
from easysmart.config import KafkaBridgeSettings, KafkaSettings
from easysmart.events import to_kafka

MAIN = Path(__file__).resolve().parents[2] / "functions" / "process" / "main.py"


class InProcessSink:
    """The bridge's HTTP session, answered by the process function's app in this interpreter."""

    def __init__(self, client) -> None:
        self.client = client

    def post(self, url, headers, data, timeout):
        answer = self.client.post("/", headers=headers, data=data)
        response = requests.Response()
        response.status_code = answer.status_code
        response._content = answer.data
        return response


@pytest.fixture
def process_client(database_url, blobs, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CLAIM_SIGNING_KEY", TEST_CLAIM_SETTINGS.claim_signing_key)
    monkeypatch.setenv("CLAIM_SIGNING_KEY_ID", TEST_CLAIM_SETTINGS.claim_signing_key_id)
    monkeypatch.setenv("CLAIM_SIGNING_RETIRED_KEYS", ",".join(TEST_CLAIM_SETTINGS.claim_signing_retired_keys))
    return create_app(target="handle", source=str(MAIN)).test_client()


def dead_letters(servers: list[str], topic: str) -> dict[bytes, dict]:
    consumer = kafka.KafkaConsumer(
        topic, bootstrap_servers=servers, auto_offset_reset="earliest", consumer_timeout_ms=1000
    )
    try:
        return {dict(r.headers)["ce_id"]: dict(r.headers) for r in consumer}
    finally:
        consumer.close()


def batch_status(database, batch_id: str) -> str | None:
    with database.transaction() as cursor:
        cursor.execute("SELECT status FROM batches WHERE id = %s", (batch_id,))
        row = cursor.fetchone()
    return None if row is None else row[0]


def test_a_forged_claim_check_on_the_raw_topic_is_dead_lettered_with_the_reason_and_stores_nothing(
    kafka_settings, new_topic, process_client, blobs, database, make_account
):
    servers = kafka_settings.kafka_bootstrap_servers.split(",")
    raw, dlq = new_topic("test.raw"), new_topic("test.dlq")
    victim = make_account()
    genuine = stage(blobs, victim, recent_sample("ha-bulk-small.json"))
    # Whoever can write to the raw topic copies the victim's claim check under a new batch id, without a signature.
    forged = dataclasses.replace(genuine, batch_id=str(uuid.uuid4()), signature=None)
    producer = kafka.KafkaProducer(bootstrap_servers=servers, acks="all")
    for claim in (forged, genuine):
        message = to_kafka(claim)
        producer.send(raw, key=message.key.encode(), value=message.value, headers=list(message.headers.items()))
    producer.flush(timeout=10)
    producer.close()

    bridge = KafkaSourceBridge(
        KafkaSettings(
            kafka_bootstrap_servers=kafka_settings.kafka_bootstrap_servers, kafka_topic_raw=raw, kafka_topic_dlq=dlq
        ),
        KafkaBridgeSettings(
            sink_url="http://process/",
            group_id=f"test-{uuid.uuid4().hex}",
            backoff_base_s=0.01,
            backoff_max_s=0.02,
            retry_max_elapsed_s=5,
            request_timeout_s=30,
        ),
        session=InProcessSink(process_client),
    )
    runner = threading.Thread(target=bridge.run)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while batch_status(database, genuine.batch_id) != "done" and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        bridge.stopping.set()
        runner.join(timeout=30)

    letters = dead_letters(servers, dlq)
    assert set(letters) == {forged.batch_id.encode()}
    headers = letters[forged.batch_id.encode()]
    assert headers["ce_knativeerrorcode"] == b"422"
    assert b"the claim check is not signed" in base64.b64decode(headers["ce_knativeerrordata"])
    assert batch_status(database, forged.batch_id) is None
    assert batch_status(database, genuine.batch_id) == "done"
    with database.transaction() as cursor:
        cursor.execute(
            "SELECT count(*) FROM telemetry_data t JOIN sensors s ON s.id = t.sensor_id WHERE s.tenant_id = %s",
            (victim.tenant_id,),
        )
        assert cursor.fetchone()[0] == 40  # the genuine upload's readings, once
