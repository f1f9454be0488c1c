"""Creates the local stack's Kafka topics and S3 bucket if missing (idempotent), waiting for readiness.

Usage: python infra/local/ensure_resources.py kafka|s3
"""
from __future__ import annotations

import os
import sys
import time

SEVEN_DAYS_MS = 7 * 24 * 3600 * 1000
# A telemetry.stored event of a batch touching tens of thousands of sensors is a few MB (the relay allows 16 MiB).
MAX_EVENT_BYTES = 16 * 1024 * 1024
THIRTY_DAYS_MS = 30 * 24 * 3600 * 1000


def retry(action, what: str, timeout_s: float = 90):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return action()
        except Exception as error:  # the service is still starting; any failure means "not yet"
            if time.monotonic() > deadline:
                raise SystemExit(f"{what} failed: {error}")
            time.sleep(1)


def ensure_topics() -> None:
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    servers = os.environ["KAFKA_BOOTSTRAP_SERVERS"].split(",")
    admin = retry(lambda: KafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=10000), "connecting to Kafka")
    wanted = {
        os.environ.get("KAFKA_TOPIC_RAW", "telemetry.raw"): NewTopic(
            os.environ.get("KAFKA_TOPIC_RAW", "telemetry.raw"), 3, 1, topic_configs={"retention.ms": str(SEVEN_DAYS_MS)}),
        os.environ.get("KAFKA_TOPIC_DLQ", "telemetry.dlq"): NewTopic(
            os.environ.get("KAFKA_TOPIC_DLQ", "telemetry.dlq"), 1, 1, topic_configs={"retention.ms": str(THIRTY_DAYS_MS)}),
        # The outbox relay's topics (keyed by tenant) and the dead letters of their bridge routes.
        "telemetry.stored": NewTopic("telemetry.stored", 3, 1, topic_configs={
            "retention.ms": str(SEVEN_DAYS_MS), "max.message.bytes": str(MAX_EVENT_BYTES)}),
        "alerts.events": NewTopic("alerts.events", 3, 1, topic_configs={"retention.ms": str(SEVEN_DAYS_MS)}),
        "telemetry.stored.dlq": NewTopic("telemetry.stored.dlq", 1, 1, topic_configs={
            "retention.ms": str(THIRTY_DAYS_MS), "max.message.bytes": str(MAX_EVENT_BYTES)}),
        "alerts.events.dlq": NewTopic("alerts.events.dlq", 1, 1, topic_configs={"retention.ms": str(THIRTY_DAYS_MS)}),
    }

    def create() -> None:
        existing = set(admin.list_topics())
        missing = [topic for name, topic in wanted.items() if name not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
        described = admin.describe_topics(list(wanted))
        if any(topic.get("error_code") for topic in described):
            raise RuntimeError(f"topics not ready: {described}")
        # A topic made earlier (by an older stack, or a test before the stack) gets today's settings too: a
        # telemetry.stored left at Kafka's 1 MB would refuse a large batch's event and hold up the relay.
        admin.alter_configs([
            ConfigResource(ConfigResourceType.TOPIC, name, configs=topic.topic_configs) for name, topic in wanted.items()
        ])

    retry(create, "creating topics")
    admin.close()
    print("topics ready:", ", ".join(wanted))


def ensure_bucket() -> None:
    import boto3
    import botocore.config

    client = boto3.client(
        "s3", endpoint_url=os.environ["S3_ENDPOINT_URL"], aws_access_key_id=os.environ["S3_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["S3_SECRET_ACCESS_KEY"], region_name=os.environ.get("S3_REGION", "us-east-1"),
        config=botocore.config.Config(s3={"addressing_style": "path"}, connect_timeout=3, read_timeout=10),
    )
    bucket = os.environ.get("S3_BUCKET", "telemetry-raw")

    def create() -> None:
        names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if bucket not in names:
            client.create_bucket(Bucket=bucket)

    retry(create, f"creating bucket {bucket}")
    print("bucket ready:", bucket)


if __name__ == "__main__":
    {"kafka": ensure_topics, "s3": ensure_bucket}[sys.argv[1]]()
