"""Who may upload, through the public URL: token checks, immediate revocation and the rate limit."""

import base64
import json
import os
import time
import uuid

import jwt
import requests
from support.samples import recent_sample
from support.stack import BASE_URL, esm, login, new_tenant, upload


def _claims(tenant_id: str, account_id: str, **overrides) -> dict:
    now = int(time.time())
    claims = {
        "sub": account_id,
        "tenant": tenant_id,
        "acct": "device",
        "type": "access",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "iss": os.environ.get("JWT_ISSUER", "easysmart"),
        "aud": os.environ.get("JWT_AUDIENCE", "easysmart-api"),
    }
    claims.update(overrides)
    return claims


def _decoded(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def _post_with(token: str) -> requests.Response:
    return upload(token, recent_sample("ha-bulk-legacy.json"))


def test_missing_token_is_401():
    response = requests.post(f"{BASE_URL}/api/v1/telemetry/bulk", data=b"[]", timeout=10)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_expired_token_is_401():
    tenant = new_tenant()
    real = _decoded(tenant.device_token())
    token = jwt.encode(
        _claims(real["tenant"], real["sub"], iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
        os.environ["JWT_SECRET"],
        algorithm="HS256",
    )
    assert _post_with(token).status_code == 401


def test_token_signed_with_another_key_is_401():
    tenant = new_tenant()
    real = _decoded(tenant.device_token())
    token = jwt.encode(_claims(real["tenant"], real["sub"]), "not-the-server-key-" * 3, algorithm="HS256")
    assert _post_with(token).status_code == 401


def test_alg_none_token_is_401():
    tenant = new_tenant()
    real = _decoded(tenant.device_token())

    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    token = f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(_claims(real['tenant'], real['sub']))}."
    assert _post_with(token).status_code == 401


def test_user_token_on_ingest_is_403():
    tenant = new_tenant()
    response = _post_with(tenant.user_token())
    assert response.status_code == 403


def test_refresh_token_as_access_token_is_401():
    tenant = new_tenant()
    pair = login(tenant.device, tenant.device_password)
    assert _post_with(pair["refresh_token"]).status_code == 401


def test_a_blocked_account_is_refused_on_its_next_upload_analytics_request_and_me():
    tenant = new_tenant()
    device_token, user_token = tenant.device_token(), tenant.user_token()
    assert _post_with(device_token).status_code == 201

    esm("account", "block", tenant.device)
    esm("account", "block", tenant.user)

    refused = [
        _post_with(device_token),
        requests.get(f"{BASE_URL}/api/v1/analytics/equipments", headers=_bearer(user_token), timeout=10),
        requests.get(f"{BASE_URL}/api/v1/auth/me", headers=_bearer(device_token), timeout=10),
    ]
    assert [response.status_code for response in refused] == [401, 401, 401]
    wrong = requests.post(
        f"{BASE_URL}/api/v1/auth/device/login", json={"username": tenant.device, "password": "wrong"}, timeout=10
    )
    right = requests.post(
        f"{BASE_URL}/api/v1/auth/device/login",
        json={"username": tenant.device, "password": tenant.device_password},
        timeout=10,
    )
    assert (
        (right.status_code, right.json())
        == (wrong.status_code, wrong.json())
        == (
            401,
            {"error": "unauthorized", "message": "invalid username or password"},
        )
    )


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_rate_limit_answers_429_with_retry_after_and_ratelimit_headers():
    tenant = new_tenant()
    token = tenant.device_token()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    statuses = []
    for _ in range(400):
        response = requests.post(f"{BASE_URL}/api/v1/telemetry/bulk", data=b"not json", headers=headers, timeout=10)
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
    assert statuses[0] == 400
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["RateLimit-Remaining"] == "0"
    assert "RateLimit-Limit" in response.headers
