"""Provisioning a Home Assistant installation through the public URL: an admin creates the device account, the
client logs in with what the answer gives its config flow and uploads; rotating the password and blocking the
device take effect on its next request; each action is in the audit log with the admin as actor."""

import uuid

import requests
from support.admin import call, new_user
from support.samples import recent_sample
from support.stack import BASE_URL, new_tenant, upload

DEVICE_LOGIN = "/api/v1/auth/device/login"


def device_login(api_url: str, username: str, password: str) -> requests.Response:
    # As the integration does: the URL it was given, the device login path, the credentials.
    return requests.post(api_url + DEVICE_LOGIN, json={"username": username, "password": password}, timeout=10)


def test_an_admin_provisions_rotates_and_blocks_a_device_each_action_audited():
    tenant = new_tenant()
    owner_token = tenant.user_token()
    admin, admin_token = new_user(owner_token, "admin")
    _, viewer_token = new_user(owner_token, "viewer")
    username = f"e2e-ha-{uuid.uuid4().hex[:10]}"

    assert call("POST", "/api/v1/admin/devices", viewer_token, {"username": username}).status_code == 403
    created = call("POST", "/api/v1/admin/devices", admin_token, {"username": username})
    assert created.status_code == 201, created.text
    device = created.json()
    flow = device["config_flow"]
    assert flow["api_url"].rstrip("/") == BASE_URL.rstrip("/") and flow["username"] == username

    first = device_login(flow["api_url"], flow["username"], flow["password"])
    assert first.status_code == 200
    uploaded = upload(first.json()["access_token"], recent_sample("ha-bulk-small.json", hours_ago=1))
    assert uploaded.status_code == 201

    rotated = call("POST", f"/api/v1/admin/devices/{device['id']}/rotate", admin_token, {})
    assert rotated.status_code == 200, rotated.text
    assert device_login(flow["api_url"], username, flow["password"]).status_code == 401
    second = device_login(flow["api_url"], username, rotated.json()["password"])
    assert second.status_code == 200
    token = second.json()["access_token"]

    assert call("POST", f"/api/v1/admin/devices/{device['id']}/block", admin_token).status_code == 200
    assert upload(token, recent_sample("ha-bulk-small.json", hours_ago=1)).status_code == 401

    taken = call("POST", "/api/v1/admin/devices", admin_token, {"username": username})
    assert taken.status_code == 409
    audit = call("GET", "/api/v1/admin/audit", owner_token, limit=100).json()["entries"]
    seen = {(entry["action"], entry["actor"]["id"], entry["target"]["id"]) for entry in audit}
    for action in ("device.create", "device.rotate", "device.block"):
        assert (action, admin["id"], device["id"]) in seen, action


def test_device_routes_answer_404_across_tenants_and_422_with_paths():
    ours, theirs = new_tenant(), new_tenant()
    their_admin = theirs.user_token()
    created = call("POST", "/api/v1/admin/devices", their_admin, {"username": f"e2e-ha-{uuid.uuid4().hex[:10]}"})
    assert created.status_code == 201

    token = ours.user_token()
    assert call("POST", f"/api/v1/admin/devices/{created.json()['id']}/block", token).status_code == 404
    assert call("GET", "/api/v1/admin/devices").status_code == 401
    bad = call("POST", "/api/v1/admin/devices", token, {"username": ""})
    assert bad.status_code == 422 and bad.json()["paths"]
