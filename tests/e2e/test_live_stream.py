"""The browsers' live stream through the whole stack: readings above a rule's threshold, uploaded through the front
door, reach the tenant's Server-Sent Events stream as one `fired` message (process -> outbox relay -> alerts ->
notify -> Redis -> stream), which another tenant's stream never shows; a reconnection with Last-Event-ID resumes
after it without repeating it."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime

import orjson
import pytest
import requests
from support.stack import BASE_URL, new_tenant, query_one, upload, wait_for_batch, wait_until

from easysmart.demo import DEMO_NAMESPACE, demo_upload
from easysmart.outbox import ALERT_FIRED_TYPE

TICKET_URL = f"{BASE_URL}/api/v1/alerts/stream/ticket"


class StreamClient:
    """An SSE client on a thread of its own (as a browser's EventSource), recording the messages it receives."""

    def __init__(self, token: str, last_event_id: str | None = None) -> None:
        ticket = requests.post(TICKET_URL, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert ticket.status_code == 201, ticket.text
        headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last_event_id} if last_event_id else {})}
        self.response = requests.get(f"{BASE_URL}{ticket.json()['url']}", headers=headers, stream=True, timeout=40)
        assert self.response.status_code == 200, self.response.text
        assert self.response.headers["Content-Type"].startswith("text/event-stream")
        self.messages: list[dict] = []
        self.comments = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line.startswith(":"):
                    self.comments += 1
                elif line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                elif "data" in fields:
                    self.messages.append({**fields, "data": orjson.loads(fields["data"])})
                    fields = {}
        except (requests.RequestException, AttributeError, ValueError):
            pass  # closed by the test

    def close(self) -> None:
        self.response.close()
        self.thread.join(timeout=10)


@pytest.fixture
def streams():
    opened: list[StreamClient] = []

    def open_stream(token: str, last_event_id: str | None = None) -> StreamClient:
        opened.append(StreamClient(token, last_event_id))
        return opened[-1]

    yield open_stream
    for client in opened:
        client.close()


def test_readings_above_a_threshold_reach_the_tenants_live_stream_once_and_no_other_tenants(streams):
    tenant, other = new_tenant(), new_tenant()
    user = {"Authorization": f"Bearer {tenant.user_token()}"}
    rule = {"type": "threshold", "sensor_type": "temperature", "above": -15.0, "for_s": 600, "severity": "critical"}
    made = requests.post(f"{BASE_URL}/api/v1/alerts/rules", json=rule, headers=user, timeout=10)
    assert made.status_code == 201, made.text
    ours, theirs = streams(tenant.user_token()), streams(other.user_token())
    # Freezer Demo 2 stays about 2 °C for 20 minutes; Freezer Demo 1, about -18 °C, never crosses.
    items = demo_upload(datetime.now().astimezone(), "America/Sao_Paulo", minutes=20)
    warm_probe = str(uuid.uuid5(DEMO_NAMESPACE, "Freezer Demo 2/Temperatura"))

    answer = upload(tenant.device_token(), items)
    assert answer.status_code == 201, answer.text
    assert wait_for_batch(tenant.device_token(), answer.json()["batch_id"])["status"] == "done"
    wait_until(lambda: ours.messages, 150, message="the fired message on the live stream")
    [fired] = ours.messages
    resumed = streams(tenant.user_token(), last_event_id=fired["id"])
    wait_until(lambda: resumed.comments > 0, 30, message="the resumed stream open")

    assert fired["event"] == "fired" and fired["data"]["type"] == ALERT_FIRED_TYPE
    assert fired["data"]["data"]["alert"]["sensor_uuid"] == warm_probe
    tenant_id = query_one("SELECT id::text FROM tenants WHERE name = %s", (tenant.name,))
    assert (fired["data"]["data"]["tenant_id"],) == tenant_id
    assert theirs.messages == [] and resumed.messages == []


def test_a_device_token_gets_no_ticket_and_a_spent_ticket_opens_nothing():
    tenant = new_tenant()
    device = requests.post(TICKET_URL, headers={"Authorization": f"Bearer {tenant.device_token()}"}, timeout=10)
    ticket = requests.post(TICKET_URL, headers={"Authorization": f"Bearer {tenant.user_token()}"}, timeout=10)
    url = f"{BASE_URL}{ticket.json()['url']}"
    with requests.get(url, stream=True, timeout=10) as first:
        first_status = first.status_code
    again = requests.get(url, timeout=10)

    assert device.status_code == 403
    assert first_status == 200 and again.status_code == 401
