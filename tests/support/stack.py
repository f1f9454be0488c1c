"""Helpers for tests against the running local stack (started by `make up` / `make test`)."""

from __future__ import annotations

import gzip
import os
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
import psycopg2
import pytest
import requests

from easysmart.claimsig import ClaimKeyring
from easysmart.config import ClaimSigningSettings
from easysmart.events import ClaimCheck

ROOT = Path(__file__).resolve().parents[2]
BASE_URL = os.environ.get("ESM_BASE_URL", "http://127.0.0.1:8080")
ESM = str(ROOT / ".venv" / "bin" / "esm")


def stack(action: str, *services: str) -> None:
    """Start or stop services of the local stack (infra/local/stack.sh)."""
    subprocess.run(
        ["bash", str(ROOT / "infra/local/stack.sh"), action, *services], check=True, cwd=ROOT, stdout=subprocess.DEVNULL
    )


def esm(*args: str) -> str:
    return subprocess.run([ESM, *args], check=True, capture_output=True, text=True, cwd=ROOT).stdout


@dataclass
class Tenant:
    name: str
    device: str
    device_password: str
    user: str
    user_password: str

    def device_token(self) -> str:
        return login(self.device, self.device_password, device=True)["access_token"]

    def user_token(self) -> str:
        return login(self.user, self.user_password, device=False)["access_token"]


def new_tenant(timezone: str = "America/Sao_Paulo") -> Tenant:
    suffix = uuid.uuid4().hex[:10]
    tenant = Tenant(f"t-{suffix}", f"dev-{suffix}", f"pw-{suffix}-d", f"usr-{suffix}", f"pw-{suffix}-u")
    esm("tenant", "create", tenant.name, "--timezone", timezone)
    esm(
        "account",
        "create",
        "--tenant",
        tenant.name,
        "--kind",
        "device",
        tenant.device,
        "--password",
        tenant.device_password,
    )
    esm("account", "create", "--tenant", tenant.name, "--kind", "user", tenant.user, "--password", tenant.user_password)
    return tenant


def login(username: str, password: str, device: bool = True) -> dict:
    path = "/api/v1/auth/device/login" if device else "/api/v1/auth/login"
    response = requests.post(BASE_URL + path, json={"username": username, "password": password}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def upload(token: str, items: object, gzip_it: bool = True, timeout: float = 60, **headers: str) -> requests.Response:
    body = orjson.dumps(items)
    request_headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **headers}
    if gzip_it:
        body = gzip.compress(body)
        request_headers["Content-Encoding"] = "gzip"
    return requests.post(BASE_URL + "/api/v1/telemetry/bulk", data=body, headers=request_headers, timeout=timeout)


def batch(token: str, batch_id: str) -> requests.Response:
    return requests.get(
        f"{BASE_URL}/api/v1/telemetry/batches/{batch_id}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def wait_for_batch(token: str, batch_id: str, timeout: float = 60, statuses=("done", "failed")) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        response = batch(token, batch_id)
        if response.status_code == 200:
            last = response.json()
            if last["status"] in statuses:
                return last
        time.sleep(0.3)
    raise AssertionError(f"batch {batch_id} not {statuses} within {timeout} s; last seen {last}")


def db():
    return psycopg2.connect(os.environ["DATABASE_URL"])


def query_one(sql: str, params: tuple = ()) -> tuple | None:
    conn = db()
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()
    finally:
        conn.close()


def stored_rows(tenant_name: str) -> int:
    return query_one(
        "SELECT count(*) FROM telemetry_data t JOIN sensors s ON s.id = t.sensor_id"
        " JOIN tenants n ON n.id = s.tenant_id WHERE n.name = %s",
        (tenant_name,),
    )[0]


def wait_until(predicate, timeout: float, interval: float = 0.5, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{message} not reached within {timeout} s")


def signed_for_stack(claim: ClaimCheck) -> ClaimCheck:
    """The claim check signed with the running stack's key, as its ingest would sign it: CLAIM_SIGNING_KEY
    (make test exports it), else the key infra/local/stack.sh generated; skips when neither is there."""
    key = os.environ.get("CLAIM_SIGNING_KEY")
    generated = ROOT / ".local" / "secrets" / "claim-signing-key"
    if not key and generated.exists():
        key = generated.read_text().strip()
    if not key:
        pytest.skip("the stack's claim-signing key is unknown (CLAIM_SIGNING_KEY): run through make test")
    settings = ClaimSigningSettings(
        claim_signing_key=key, claim_signing_key_id=os.environ.get("CLAIM_SIGNING_KEY_ID") or "k1"
    )
    return ClaimKeyring.from_settings(settings).sign(claim)
