"""Forged client addresses, through the front door and straight at auth's own port (as anything inside
the cluster can reach a function): neither spreads login failures over addresses the attacker made up."""

from __future__ import annotations

import os

import pytest
import requests
from support.stack import BASE_URL, new_tenant

AUTH_URL = f"http://127.0.0.1:{os.environ.get('AUTH_PORT', '8081')}"
MAX_FAILURES = int(os.environ.get("LOGIN_MAX_FAILURES", "5"))


def forged(n: int) -> dict[str, str]:
    address = f"198.51.100.{n}"
    return {"X-Real-IP": address, "X-Forwarded-For": address, "X-ESM-Proxy-Secret": "a-guess-at-the-front-proxy-secret"}


@pytest.mark.parametrize("base_url", [BASE_URL, AUTH_URL], ids=["through the front door", "around it"])
def test_failures_from_forged_addresses_count_against_the_real_one(base_url):
    tenant = new_tenant()
    url = base_url + "/api/v1/auth/device/login"
    wrong = {"username": tenant.device, "password": "wrong-password"}
    right = {"username": tenant.device, "password": tenant.device_password}

    failures = [requests.post(url, json=wrong, headers=forged(n), timeout=10).status_code for n in range(MAX_FAILURES)]
    refused = requests.post(url, json=right, headers=forged(MAX_FAILURES), timeout=10)

    assert failures == [401] * MAX_FAILURES
    # Every attempt came from 127.0.0.1, so that (account, address) pair is locked, whatever addresses were claimed.
    assert refused.status_code in (423, 429), refused.text
    assert "Retry-After" in refused.headers
