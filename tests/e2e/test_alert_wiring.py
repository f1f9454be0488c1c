"""The alerting wiring through the whole stack: readings above a rule's threshold, uploaded through the front door,
reach the tenant's webhook (process -> outbox relay -> telemetry.stored -> alerts -> outbox relay -> alerts.events
-> notify), once, even when the relay publishes the batch's stored event again."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest
import requests
from support.stack import BASE_URL, db, new_tenant, query_one, upload, wait_for_batch, wait_until

from easysmart.demo import DEMO_NAMESPACE, demo_upload
from easysmart.outbox import ALERT_FIRED_TYPE
from easysmart.process import STORED_EVENT_NAMESPACE


class Receiver:
    """A webhook receiver on 127.0.0.1 (the local stack lets webhooks call loopback) recording what it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(orjson.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def fired(self) -> list[dict]:
        return [body for body in self.bodies if body.get("type") == ALERT_FIRED_TYPE]


@pytest.fixture
def receiver():
    made = Receiver()
    yield made
    made.server.shutdown()
    made.server.server_close()


def republished(event_id: str) -> bool:
    return query_one("SELECT published_at IS NOT NULL FROM event_outbox WHERE event_id = %s", (event_id,)) == (True,)


def test_readings_above_a_threshold_reach_the_tenants_webhook_once(receiver):
    tenant = new_tenant()
    user = {"Authorization": f"Bearer {tenant.user_token()}"}
    hook = requests.post(
        f"{BASE_URL}/api/v1/alerts/channels", json={"type": "webhook", "url": receiver.url()}, headers=user, timeout=10
    )
    assert hook.status_code == 201, hook.text
    rule = {"type": "threshold", "sensor_type": "temperature", "above": -15.0, "for_s": 600, "severity": "critical"}
    made = requests.post(f"{BASE_URL}/api/v1/alerts/rules", json=rule, headers=user, timeout=10)
    assert made.status_code == 201, made.text
    # Freezer Demo 2 stays about 2 °C for 20 minutes; Freezer Demo 1, about -18 °C, never crosses.
    items = demo_upload(datetime.now().astimezone(), "America/Sao_Paulo", minutes=20)
    warm_probe = str(uuid.uuid5(DEMO_NAMESPACE, "Freezer Demo 2/Temperatura"))

    answer = upload(tenant.device_token(), items)
    assert answer.status_code == 201, answer.text
    batch_id = answer.json()["batch_id"]
    assert wait_for_batch(tenant.device_token(), batch_id)["status"] == "done"

    # notify delivers at once, or on its minute tick.
    wait_until(lambda: receiver.fired(), 150, message="the fired webhook")
    [fired] = receiver.fired()
    assert fired["data"]["alert"]["sensor_uuid"] == warm_probe

    # As after a relay crash between publishing and marking: the stored event is published again, same id.
    event_id = str(uuid.uuid5(STORED_EVENT_NAMESPACE, batch_id))
    conn = db()
    try:
        with conn, conn.cursor() as cursor:
            cursor.execute("UPDATE event_outbox SET published_at = NULL WHERE event_id = %s", (event_id,))
    finally:
        conn.close()
    wait_until(lambda: republished(event_id), 30, message="the stored event published again")
    later = upload(tenant.device_token(), demo_upload(datetime.now().astimezone(), "America/Sao_Paulo", 2))
    later_batch = later.json()["batch_id"]
    assert wait_for_batch(tenant.device_token(), later_batch)["status"] == "done"
    # The later batch's event follows the republished one on the tenant's partition, delivered in order: once
    # alerts has evaluated it, the republished one was handled before it, and fired nothing.
    wait_until(lambda: evaluated(later_batch), 60, message="the later batch evaluated by alerts")
    assert fired_events(tenant.name) == 1
    assert len(receiver.fired()) == 1


def evaluated(batch_id: str) -> bool:
    return query_one("SELECT 1 FROM alert_processed_batches WHERE batch_id = %s", (batch_id,)) is not None


def fired_events(tenant_name: str) -> int:
    row = query_one(
        "SELECT count(*) FROM event_outbox o JOIN tenants t ON t.id::text = o.kafka_key"
        " WHERE t.name = %s AND o.topic = 'alerts.events' AND o.type = %s",
        (tenant_name, ALERT_FIRED_TYPE),
    )
    return row[0] if row else 0
