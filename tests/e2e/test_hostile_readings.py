"""Readings PostgreSQL cannot store, uploaded through the public API, cost only themselves: the batch is done
with the good readings, and another tenant's upload whose claim check shares its Kafka partition is not held up."""

import os

import pytest
from kafka import KafkaConsumer
from kafka.partitioner.default import murmur2
from support.samples import recent_sample
from support.stack import esm, login, new_tenant, query_one, upload, wait_for_batch

RAW_TOPIC = os.environ.get("KAFKA_TOPIC_RAW", "telemetry.raw")


def raw_partitions() -> int:
    consumer = KafkaConsumer(bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"])
    try:
        return len(consumer.partitions_for_topic(RAW_TOPIC))
    finally:
        consumer.close()


def partition_of(username: str, partitions: int) -> int:
    """The partition ingest's producer picks for this device's claim checks (key `tenant:account`, murmur2)."""
    tenant_id, account_id = query_one("SELECT tenant_id, id FROM accounts WHERE username = %s", (username,))
    return (murmur2(f"{tenant_id}:{account_id}".encode()) & 0x7FFFFFFF) % partitions


@pytest.fixture(scope="module")
def neighbours():
    """A tenant whose device sends the hostile upload, and a device of another tenant on the same partition."""
    hostile, other = new_tenant(), new_tenant()
    partitions = raw_partitions()
    target = partition_of(hostile.device, partitions)
    if partition_of(other.device, partitions) == target:
        return hostile, other.device, other.device_password
    for attempt in range(8 * partitions):
        device = f"{other.device}-{attempt}"
        esm("account", "create", "--tenant", other.name, "--kind", "device", device, "--password", f"pw-{device}")
        if partition_of(device, partitions) == target:
            return hostile, device, f"pw-{device}"
    pytest.fail(f"no device of {other.name} on partition {target} of {partitions}")


def test_unstorable_readings_are_rejected_and_a_neighbour_on_the_same_partition_is_processed_at_once(neighbours):
    hostile, neighbour, neighbour_password = neighbours
    items = recent_sample("ha-bulk-small.json", hours_ago=1)
    readings = items[0]["sensor"]
    readings[0]["sensor_telemetria"] = "a\u0000b"  # text PostgreSQL cannot hold
    readings[1]["sensor_uuid"] = "u" * 300_000  # an identity over its bound: never cut
    readings[2]["sensor_bateria_pct"] = 1e39  # outside a real's range
    response = upload(hostile.device_token(), items)
    assert response.status_code == 201
    hostile_batch = response.json()["batch_id"]

    neighbour_token = login(neighbour, neighbour_password, device=True)["access_token"]
    response = upload(neighbour_token, recent_sample("ha-bulk-small.json", hours_ago=1))
    assert response.status_code == 201
    # Far below the bridge's retry window (90 minutes): the hostile batch did not hold the partition.
    assert wait_for_batch(neighbour_token, response.json()["batch_id"], timeout=30)["status"] == "done"

    status = wait_for_batch(hostile.device_token(), hostile_batch, timeout=30)
    assert status["status"] == "done"
    assert (status["stored"], status["rejected"]) == (37, 3)
    assert {reason["path"] for reason in status["reasons"]} == {"[0].sensor[0]", "[0].sensor[1]", "[0].sensor[2]"}
