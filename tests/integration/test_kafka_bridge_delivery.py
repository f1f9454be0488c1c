"""The kafka-source bridge on the real broker: every record of every partition is delivered
while other partitions' deliveries are in flight (their partitions paused meanwhile)."""

import http.server
import threading
import time
import uuid
from collections import Counter

import kafka
import pytest
import requests
from support.claims import CLAIM

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
    bridge = KafkaSourceBridge(
        KafkaSettings(
            kafka_bootstrap_servers=kafka_settings.kafka_bootstrap_servers,
            kafka_topic_raw=topic,
            kafka_topic_dlq=f"{topic}.dlq",
        ),
        KafkaBridgeSettings(
            sink_url="http://process/",
            group_id=f"test-{uuid.uuid4().hex}",
            backoff_base_s=0.01,
            backoff_max_s=0.02,
            retry_max_elapsed_s=5,
            request_timeout_s=5,
        ),
        session=sink,
    )
    runner = threading.Thread(target=bridge.run)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while len(sink.delivered) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        bridge.stopping.set()
        runner.join(timeout=30)
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
