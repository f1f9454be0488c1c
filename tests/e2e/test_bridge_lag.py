"""The kafka-source bridge's lag metric on the real local stack: claim checks waiting while process is stopped
make it grow, and it comes back to zero once process is started again and has them all.

Stops and starts process (infra/local/stack.sh) and starts it again before it ends.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from support.stack import new_tenant, stack, upload, wait_for_batch, wait_until

from easysmart.demo import demo_upload

pytestmark = pytest.mark.slow
BRIDGE_METRICS_URL = f"http://127.0.0.1:{os.environ.get('KAFKA_BRIDGE_METRICS_PORT', '8091')}/metrics"
CLAIM_TOPIC = os.environ.get("KAFKA_TOPIC_RAW", "telemetry.raw")


def claim_check_lag() -> float:
    """The bridge's lag on the claim checks' topic, summed over its partitions."""
    text = requests.get(BRIDGE_METRICS_URL, timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "esm_bridge_consumer_lag_messages"
        for sample in family.samples
        if sample.labels["topic"] == CLAIM_TOPIC
    )


def one_reading(index: int) -> list:
    moment = datetime.now().astimezone() - timedelta(hours=2, minutes=5 * index)
    items = demo_upload(moment, "America/Sao_Paulo", minutes=1)
    items[0]["sensor"] = items[0]["sensor"][:1]
    return items[:1]


def test_lag_grows_while_process_is_stopped_and_returns_to_zero_after_it_restarts():
    token = new_tenant().device_token()
    wait_until(lambda: claim_check_lag() == 0, timeout=120, message="no claim check waiting before the test")
    stack("stop", "process")
    try:
        batches = {upload(token, one_reading(i)).json()["batch_id"] for i in range(3)}
        assert len(batches) == 3
        wait_until(lambda: claim_check_lag() >= 3, timeout=60, message="the lag counting the 3 waiting claim checks")
    finally:
        stack("start", "process")

    # The bridge's next retry (at most BRIDGE_BACKOFF_MAX_S + 20 % away) delivers them.
    for batch_id in batches:
        assert wait_for_batch(token, batch_id, timeout=120)["status"] == "done"
    wait_until(lambda: claim_check_lag() == 0, timeout=60, message="the lag back to zero")
