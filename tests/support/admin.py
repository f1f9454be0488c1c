"""The admin API through the public URL, for e2e tests."""

import uuid

import requests

from support.stack import BASE_URL, login

PASSWORD = "e2e-long-enough-password"


def call(method: str, path: str, token: str | None = None, body=None, **params) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, BASE_URL + path, json=body, headers=headers, params=params, timeout=10)


def new_user(owner_token: str, role: str) -> tuple[dict, str]:
    """A user of `role` made by the owner, their password set: (the created user, their access token)."""
    body = {"username": f"e2e-{uuid.uuid4().hex[:10]}", "role": role}
    created = call("POST", "/api/v1/admin/users", owner_token, body)
    assert created.status_code == 201, created.text
    user = created.json()
    redeem = {"token": user["set_password_token"], "password": PASSWORD}
    redeemed = call("POST", "/api/v1/auth/password/set", body=redeem)
    assert redeemed.status_code == 200, redeemed.text
    return user, login(user["username"], PASSWORD, device=False)["access_token"]
