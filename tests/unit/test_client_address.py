"""The client address: X-Real-IP counts only on a request carrying the front proxy's secret, whoever the peer is."""

from __future__ import annotations

import logging

import flask
import pytest

from easysmart.config import ConfigError, ProxySettings
from easysmart.web import PROXY_SECRET_HEADER, ProxyTrust, client_address

SECRET = "front-proxy-test-secret-" + "s" * 24
TRUST = ProxyTrust.from_settings(ProxySettings(front_proxy_secret=SECRET))
app = flask.Flask(__name__)


def address_of(trust: ProxyTrust, headers: dict[str, str], peer: str = "127.0.0.1") -> str:
    # In a Knative pod every request arrives from queue-proxy on loopback: the default peer here.
    with app.test_request_context("/", headers=headers, environ_base={"REMOTE_ADDR": peer}):
        return client_address(flask.request, trust)


def test_a_forged_x_real_ip_from_loopback_without_the_secret_is_the_peer():
    assert address_of(TRUST, {"X-Real-IP": "203.0.113.9", "X-Forwarded-For": "203.0.113.9"}) == "127.0.0.1"


def test_with_the_front_proxys_secret_x_real_ip_is_believed():
    assert address_of(TRUST, {"X-Real-IP": " 203.0.113.9 ", PROXY_SECRET_HEADER: SECRET}, "10.1.2.3") == "203.0.113.9"


@pytest.mark.parametrize("presented", ["", "wrong", SECRET[:-1], SECRET + "x", SECRET.upper()])
def test_a_wrong_secret_is_the_peer(presented):
    assert address_of(TRUST, {"X-Real-IP": "203.0.113.9", PROXY_SECRET_HEADER: presented}) == "127.0.0.1"


def test_x_forwarded_for_is_never_believed():
    assert address_of(TRUST, {"X-Forwarded-For": "203.0.113.9", PROXY_SECRET_HEADER: SECRET}) == "127.0.0.1"


def test_without_a_configured_secret_no_header_is_believed_and_that_is_logged_once(caplog):
    with caplog.at_level(logging.WARNING, logger="easysmart.web"):
        trust = ProxyTrust.from_settings(ProxySettings())

    assert address_of(trust, {"X-Real-IP": "203.0.113.9", PROXY_SECRET_HEADER: ""}) == "127.0.0.1"
    assert [record.getMessage() for record in caplog.records] == [
        "FRONT_PROXY_SECRET is not set: no X-Real-IP is believed, every client address is the peer's"
    ]


def test_a_short_secret_refuses_to_start():
    with pytest.raises(ConfigError, match="FRONT_PROXY_SECRET is shorter than 32 bytes"):
        ProxyTrust.from_settings(ProxySettings(front_proxy_secret="too-short"))
