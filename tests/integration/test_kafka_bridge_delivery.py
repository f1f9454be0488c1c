"""The kafka-source bridge on the real broker: every record of every partition is delivered
while other partitions' deliveries are in flight (their partitions paused meanwhile); offsets committed past what
is done, read back by the lag metric, and what was not done delivered again after a restart."""

import http.server
import threading
import time
import uuid
from collections import Counter

import confluent_kafka
import kafka
import pytest
import requests
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import REGISTRY
from support.claims import CLAIM

from easysmart.bridges.bridge_metrics import RouteMetrics
from easysmart.bridges.kafka_source import KafkaSourceBridge, SinkClient
from easysmart.config import KafkaBridgeSettings, KafkaSettings
from easysmart.events import to_kafka

# One partition short, one long: the long one's records outnumber what a small poll hands over.
RECORDS_PER_PARTITION = {0: 5, 1: 60}


class SlowSink:
    """Answers 200 after a short wait, so partitions stay paused across several polls."""

    def __init__(self):
        self.delivered = Counter()
        self.lock = threading.Lock()

    def post(self, url, headers, data, timeout):
        time.sleep(0.01)
        with self.lock:
            self.delivered[headers["ce-id"]] += 1
        response = requests.Response()
        response.status_code = 200
        return response


def test_every_partition_is_delivered_in_full_while_others_are_in_flight(kafka_settings, new_topic):
    servers = kafka_settings.kafka_bootstrap_servers.split(",")
    topic = new_topic("test.bridge", partitions=2)
    # Both partitions' records are on the broker before the bridge starts, so its first
    # fetch returns both.
    producer = kafka.KafkaProducer(bootstrap_servers=servers, acks="all")
    message = to_kafka(CLAIM)
    ids = []
    for partition, count in RECORDS_PER_PARTITION.items():
        for n in range(count):
            event_id = f"p{partition}-{n}"
            headers = [(k, event_id.encode() if k == "ce_id" else v) for k, v in message.headers.items()]
            producer.send(topic, value=message.value, key=message.key.encode(), headers=headers, partition=partition)
            ids.append(event_id)
    producer.flush(timeout=10)
    producer.close()

    sink = SlowSink()
    run_until(
        bridge_of(kafka_settings, topic, f"test-{uuid.uuid4().hex}", sink), lambda: len(sink.delivered) >= len(ids)
    )
    assert sorted(sink.delivered) == sorted(ids)
    assert set(sink.delivered.values()) == {1}


class AnsweringSink(http.server.BaseHTTPRequestHandler):
    """Answers each POST with the status in its X-Answer-Status header and a body of X-Answer-Bytes bytes."""

    def do_POST(self):
        received = self.rfile.read(int(self.headers["Content-Length"]))
        body = received[:10] * (int(self.headers.get("X-Answer-Bytes", "0")) // 10 or 1)
        self.send_response(int(self.headers["X-Answer-Status"]))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_the_sink_client_answers_status_and_text_reuses_its_connection_and_bounds_what_it_reads():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AnsweringSink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    client = SinkClient(connections=2)
    try:
        first = client.post(url, {"X-Answer-Status": "200"}, b"0123456789", (5, 5))
        again = client.post(url, {"X-Answer-Status": "422"}, b"abcdefghij", (5, 5))
        long = client.post(url, {"X-Answer-Status": "503", "X-Answer-Bytes": "200000"}, b"klmnopqrst", (5, 5))
    finally:
        server.shutdown()
    assert (first.status_code, first.text) == (200, "0123456789")
    assert (again.status_code, again.text) == (422, "abcdefghij")
    assert long.status_code == 503 and len(long.text) == SinkClient.MAX_ANSWER_BYTES
    with pytest.raises(ConnectionError):
        client.post(url, {"X-Answer-Status": "200"}, b"x", (1, 1))  # the server is gone


class AnsweringById:
    """Answers each POST with the status given for its event id (200 otherwise) and counts the attempts."""

    def __init__(self, statuses: dict[str, int]) -> None:
        self.statuses = statuses
        self.attempts: Counter = Counter()
        self.lock = threading.Lock()

    def post(self, url, headers, data, timeout):
        with self.lock:
            self.attempts[headers["ce-id"]] += 1
        response = requests.Response()
        response.status_code = self.statuses.get(headers["ce-id"], 200)
        return response


def produce(servers: list[str], topic: str, records: list[tuple[int, bytes, str]]) -> None:
    """(partition, key, event id) records of the claim check's shape."""
    producer = kafka.KafkaProducer(bootstrap_servers=servers, acks="all")
    message = to_kafka(CLAIM)
    for partition, key, event_id in records:
        headers = [(k, event_id.encode() if k == "ce_id" else v) for k, v in message.headers.items()]
        producer.send(topic, value=message.value, key=key, headers=headers, partition=partition)
    producer.flush(timeout=10)
    producer.close()


def bridge_of(kafka_settings, topic: str, group: str, sink) -> KafkaSourceBridge:
    return KafkaSourceBridge(
        KafkaSettings(
            kafka_bootstrap_servers=kafka_settings.kafka_bootstrap_servers,
            kafka_topic_raw=topic,
            kafka_topic_dlq=f"{topic}.dlq",
        ),
        KafkaBridgeSettings(
            sink_url="http://process/",
            group_id=group,
            backoff_base_s=0.01,
            backoff_max_s=0.02,
            retry_max_elapsed_s=600,
            request_timeout_s=5,
        ),
        session=sink,
    )


def run_until(bridge: KafkaSourceBridge, done, timeout_s: float = 60) -> None:
    runner = threading.Thread(target=bridge.run)
    runner.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        bridge.stopping.set()
        runner.join(timeout=30)
    assert not runner.is_alive()


def group_consumer(kafka_settings, group: str) -> confluent_kafka.Consumer:
    return confluent_kafka.Consumer(
        {"bootstrap.servers": kafka_settings.kafka_bootstrap_servers, "group.id": group, "enable.auto.commit": False}
    )


def test_delivered_partitions_are_committed_past_their_last_record_and_the_lag_read_back_is_zero(
    kafka_settings, new_topic
):
    servers = kafka_settings.kafka_bootstrap_servers.split(",")
    topic = new_topic("test.bridge", partitions=2)
    dlq = new_topic("test.bridge.dlq")
    produce(servers, topic, [(p, f"k{n}".encode(), f"p{p}-{n}") for p in (0, 1) for n in range(3)])
    produce(servers, dlq, [(0, b"k", "dead-1"), (0, b"k", "dead-2")])
    group = f"test-{uuid.uuid4().hex}"
    sink = AnsweringById({})
    bridge = bridge_of(kafka_settings, topic, group, sink)
    committed_reader = group_consumer(kafka_settings, group)
    partitions = [TopicPartition(topic, 0), TopicPartition(topic, 1)]

    def committed() -> list[int]:
        return [tp.offset for tp in committed_reader.committed(partitions, timeout=5)]

    try:
        run_until(bridge, lambda: committed() == [3, 3])

        assert sorted(sink.attempts) == sorted(f"p{p}-{n}" for p in (0, 1) for n in range(3))
        assert committed() == [3, 3]
        # The metrics read the same offsets from librdkafka: nothing left, two dead letters.
        committed_reader.assign(partitions)
        metrics = RouteMetrics(
            topic,
            dlq,
            time.monotonic,
            lambda: AdminClient({"bootstrap.servers": kafka_settings.kafka_bootstrap_servers}),
        )
        metrics.refresh(committed_reader)
        assert [
            REGISTRY.get_sample_value("esm_bridge_consumer_lag_messages", {"topic": topic, "partition": p})
            for p in ("0", "1")
        ] == [0, 0]
        assert REGISTRY.get_sample_value("esm_bridge_dead_letter_topic_messages", {"topic": topic}) == 2
    finally:
        committed_reader.close()


def test_a_record_after_one_not_done_when_the_bridge_stopped_is_delivered_again_after_a_restart(
    kafka_settings, new_topic
):
    servers = kafka_settings.kafka_bootstrap_servers.split(",")
    topic = new_topic("test.bridge")
    # Device a's second batch keeps failing (process down, say) while device b's, after it, is delivered.
    produce(servers, topic, [(0, b"a", "a-1"), (0, b"a", "a-2"), (0, b"b", "b-1")])
    group = f"test-{uuid.uuid4().hex}"
    failing = AnsweringById({"a-2": 503})

    run_until(
        bridge_of(kafka_settings, topic, group, failing),
        lambda: failing.attempts["a-2"] >= 2 and "b-1" in failing.attempts,
    )

    again = AnsweringById({})
    run_until(bridge_of(kafka_settings, topic, group, again), lambda: {"a-2", "b-1"} <= set(again.attempts))
    assert {"a-2", "b-1"} <= set(again.attempts)


class HeldSink(AnsweringById):
    """Holds every delivery until released, so the records stay in flight across a rebalance."""

    def __init__(self) -> None:
        super().__init__({})
        self.released = threading.Event()

    def post(self, url, headers, data, timeout):
        assert self.released.wait(30)
        return super().post(url, headers, data, timeout)


def test_a_partition_another_member_takes_while_in_flight_is_not_committed_and_comes_back_whole(
    kafka_settings, new_topic
):
    servers = kafka_settings.kafka_bootstrap_servers.split(",")
    topic = new_topic("test.bridge", partitions=2)
    produce(servers, topic, [(p, f"k{n % 3}".encode(), f"p{p}-{n}") for p in (0, 1) for n in range(10)])
    group = f"test-{uuid.uuid4().hex}"
    sink = HeldSink()
    bridge = bridge_of(kafka_settings, topic, group, sink)
    reader = group_consumer(kafka_settings, group)
    partitions = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    runner = threading.Thread(target=bridge.run)
    runner.start()
    other = group_consumer(kafka_settings, group)
    taken: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(bridge._in_flight) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(bridge._in_flight) == 2, "both partitions in flight"
        # A second member joins: the group's two partitions are shared out while both are in flight.
        other.subscribe([topic], on_assign=lambda _, assigned: taken.extend(tp.partition for tp in assigned))
        while not taken and time.monotonic() < deadline:
            other.poll(0.1)
        assert len(taken) == 1
        sink.released.set()
        while any(not entry.future.done() for entry in list(bridge._in_flight.values())):
            time.sleep(0.05)
        time.sleep(0.5)  # the bridge's loop ends those deliveries

        kept = 1 - taken[0]
        assert [tp.offset for tp in reader.committed(partitions, timeout=5)][taken[0]] < 0  # not the bridge's
        other.close()  # its partition comes back to the bridge, from the committed offset
        while (committed := [tp.offset for tp in reader.committed(partitions, timeout=5)]) != [10, 10]:
            assert time.monotonic() < deadline, f"committed {committed}"
            time.sleep(0.1)
    finally:
        sink.released.set()
        bridge.stopping.set()
        runner.join(timeout=30)
        reader.close()
    # The partition taken away is delivered again in full; the one given back while in flight was held until its
    # deliveries ended, then fetched on after them.
    assert all(sink.attempts[f"p{taken[0]}-{n}"] == 2 for n in range(10))
    assert all(sink.attempts[f"p{kept}-{n}"] == 1 for n in range(10))
