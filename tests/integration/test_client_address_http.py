"""The address auth and ingest act on, through the functions as functions-framework serves them.

The test client's peer is loopback, as every request's is in a Knative pod (queue-proxy): a forged
X-Real-IP must not count without the front proxy's secret (FRONT_PROXY_SECRET).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from functions_framework import create_app

from easysmart.auth import AuthService
from easysmart.config import TokenSettings
from easysmart.identity import Principal, TokenService
from easysmart.ingest import IngestService
from easysmart.web import PROXY_SECRET_HEADER

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
SECRET = "integration-test-front-proxy-secret-" + "q" * 16
FORGED = {"X-Real-IP": "203.0.113.7", "X-Forwarded-For": "203.0.113.7"}


@pytest.fixture
def addresses(monkeypatch) -> list[str]:
    """The client address each login and each upload's rate limit was given."""
    seen: list[str] = []
    login, rate_limit = AuthService.login, IngestService.rate_limit

    def spy_login(self, credentials, kind, client_addr, user_agent=None):
        seen.append(client_addr)
        return login(self, credentials, kind, client_addr, user_agent)

    def spy_rate_limit(self, principal, client_addr):
        seen.append(client_addr)
        return rate_limit(self, principal, client_addr)

    monkeypatch.setattr(AuthService, "login", spy_login)
    monkeypatch.setattr(IngestService, "rate_limit", spy_rate_limit)
    return seen


def function(name: str, monkeypatch, database_url: str, secret: str | None = SECRET):
    monkeypatch.setenv("DATABASE_URL", database_url)
    if secret is None:
        monkeypatch.delenv("FRONT_PROXY_SECRET", raising=False)
    else:
        monkeypatch.setenv("FRONT_PROXY_SECRET", secret)
    return create_app(target="handle", source=str(FUNCTIONS / name / "main.py")).test_client()


@pytest.mark.parametrize(
    "headers, expected",
    [
        (FORGED, "127.0.0.1"),
        ({**FORGED, PROXY_SECRET_HEADER: "not-the-secret"}, "127.0.0.1"),
        ({**FORGED, PROXY_SECRET_HEADER: SECRET}, "203.0.113.7"),
    ],
    ids=["forged without the secret", "forged with a wrong secret", "from the front proxy"],
)
def test_auth_counts_logins_against_the_address_the_front_proxy_vouches_for(
    database_url, make_account, addresses, monkeypatch, headers, expected
):
    client = function("auth", monkeypatch, database_url)
    account = make_account("device")

    response = client.post(
        "/api/v1/auth/device/login", json={"username": account.username, "password": account.password}, headers=headers
    )

    assert response.status_code == 200
    assert addresses == [expected]


def test_without_a_configured_secret_even_the_right_header_is_not_believed(
    database_url, make_account, addresses, monkeypatch
):
    client = function("auth", monkeypatch, database_url, secret=None)
    account = make_account("device")

    client.post(
        "/api/v1/auth/device/login",
        json={"username": account.username, "password": account.password},
        headers={**FORGED, PROXY_SECRET_HEADER: SECRET},
    )

    assert addresses == ["127.0.0.1"]


@pytest.mark.parametrize(
    "headers, expected",
    [(FORGED, "127.0.0.1"), ({**FORGED, PROXY_SECRET_HEADER: SECRET}, "203.0.113.7")],
    ids=["forged without the secret", "from the front proxy"],
)
def test_ingest_rate_limits_by_the_address_the_front_proxy_vouches_for(
    database_url, make_account, addresses, monkeypatch, headers, expected
):
    client = function("ingest", monkeypatch, database_url)
    account = make_account("device")
    tokens = TokenService(TokenSettings.from_env())
    token = tokens.access_token(Principal(account.account_id, account.tenant_id, "device", account.username))

    client.post("/api/v1/telemetry/bulk", data=b"[]", headers={**headers, "Authorization": f"Bearer {token}"})

    assert addresses == [expected]
