"""The admin API's devices, equipment and tenant settings, through the admin, auth and ingest functions as
functions-framework serves them, in process, with the real PostgreSQL, Redis, Kafka (a fresh topic nobody consumes)
and object store; process and the grace period through their services with an injected clock."""

from __future__ import annotations

import gzip
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import orjson
import psycopg2
import pytest
from functions_framework import create_app
from support.claims import TEST_KEYRING, stage
from support.clock import SetClock
from support.samples import recent_sample
from support.stack import wait_until

from easysmart import accounts
from easysmart.accountstate import AccountStates
from easysmart.admin.devices import DevicesService
from easysmart.alerting import store
from easysmart.audit import Origin
from easysmart.auth import AuthService, Credentials, hash_password
from easysmart.config import (
    AdminSettings,
    LoginSettings,
    NotifySettings,
    ProcessSettings,
    RetentionSettings,
    SmtpSettings,
    UploadLimits,
)
from easysmart.errors import UnauthorizedError
from easysmart.identity import Principal, TokenService
from easysmart.mail import Mailer
from easysmart.netguard import AddressPolicy
from easysmart.notify import NotifyService
from easysmart.process import BatchProcessor
from easysmart.webhooks import WebhookSender

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
PUBLIC_BASE_URL = "https://esm.example.com"
ORIGIN = Origin("it-request", "10.30.0.1", "pytest")


@pytest.fixture
def functions(database_url, redis_url, token_settings, new_topic, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("JWT_SECRET", token_settings.jwt_secret)
    monkeypatch.setenv("KAFKA_TOPIC_RAW", new_topic("it.admin.raw"))
    monkeypatch.setenv("PUBLIC_BASE_URL", PUBLIC_BASE_URL)
    return {
        name: create_app(target="handle", source=str(FUNCTIONS / name / "main.py")).test_client()
        for name in ("admin", "auth", "ingest", "analytics")
    }


class Tenant:
    """A fresh tenant with a user of each role, whose access tokens are signed directly."""

    def __init__(self, database, tokens: TokenService) -> None:
        suffix = uuid.uuid4().hex[:12]
        self.name = f"it-admin-{suffix}"
        with database.transaction() as cursor:
            self.id = accounts.create_tenant(cursor, self.name, "America/Sao_Paulo")
        self.headers = {role: self._user(database, tokens, role, suffix) for role in ("owner", "admin", "viewer")}

    def _user(self, database, tokens: TokenService, role: str, suffix: str) -> dict:
        account_id, username = str(uuid.uuid4()), f"it-{role}-{suffix}"
        with database.transaction() as cursor:
            cursor.execute(
                "INSERT INTO accounts (id, tenant_id, username, kind, password_hash, role)"
                " VALUES (%s, %s, %s, 'user', %s, %s)",
                (account_id, self.id, username, hash_password("unused"), role),
            )
        token = tokens.access_token(Principal(account_id, self.id, "user", username, 1, role))
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def make_tenant(database, token_settings):
    made: list[Tenant] = []

    def make() -> Tenant:
        made.append(Tenant(database, TokenService(token_settings)))
        return made[-1]

    yield make
    for tenant in made:
        try:
            with database.transaction() as cursor:
                cursor.execute("DELETE FROM audit_log WHERE tenant_id = %s", (tenant.id,))
                cursor.execute("DELETE FROM accounts WHERE tenant_id = %s", (tenant.id,))
                cursor.execute("DELETE FROM tenants WHERE id = %s", (tenant.id,))
        except psycopg2.IntegrityError:
            pass  # its batches or telemetry still refer to it: a unique tenant nobody else sees


def new_device(functions, tenant: Tenant, username: str | None = None) -> dict:
    username = username or f"it-ha-{uuid.uuid4().hex[:12]}"
    answer = functions["admin"].post(
        "/api/v1/admin/devices", json={"username": username}, headers=tenant.headers["admin"]
    )
    assert answer.status_code == 201, answer.get_data(as_text=True)
    return answer.get_json()


def device_login(functions, username: str, password: str):
    return functions["auth"].post("/api/v1/auth/device/login", json={"username": username, "password": password})


def upload(functions, access_token: str, items: list | None = None):
    body = gzip.compress(orjson.dumps(items if items is not None else recent_sample("ha-bulk-small.json")))
    return functions["ingest"].post(
        "/api/v1/telemetry/bulk",
        data=body,
        headers={
            "Authorization": f"Bearer {access_token}",
            "Content-Encoding": "gzip",
            "Content-Type": "application/json",
        },
    )


def audit_actions(database, tenant: Tenant) -> list[tuple]:
    with database.transaction() as cursor:
        cursor.execute(
            "SELECT action, target_type, target_id, actor_name FROM audit_log WHERE tenant_id = %s ORDER BY id",
            (tenant.id,),
        )
        return cursor.fetchall()


def batches_of(database, account_id: str) -> int:
    with database.transaction() as cursor:
        cursor.execute("SELECT count(*) FROM batches WHERE account_id = %s", (account_id,))
        return cursor.fetchone()[0]


def test_a_created_device_logs_in_with_the_answered_credentials_and_uploads(functions, make_tenant, database):
    tenant = make_tenant()
    username = f"it-ha-{uuid.uuid4().hex[:12]}"

    created = functions["admin"].post(
        "/api/v1/admin/devices",
        json={"username": username},
        headers={**tenant.headers["admin"], "Host": "attacker.example"},
    )

    assert created.status_code == 201, created.get_data(as_text=True)
    body = created.get_json()
    assert body["config_flow"] == {"api_url": PUBLIC_BASE_URL, "username": username, "password": body["password"]}
    login = device_login(functions, username, body["password"])
    assert login.status_code == 200
    assert upload(functions, login.get_json()["access_token"]).status_code == 201
    listed = functions["admin"].get("/api/v1/admin/devices", headers=tenant.headers["viewer"]).get_json()["devices"]
    assert [(d["id"], d["state"]) for d in listed] == [(body["id"], "active")]
    assert listed[0]["last_login_at"] is not None
    assert ("device.create", body["id"]) in [(row[0], row[2]) for row in audit_actions(database, tenant)]


def test_rotation_refuses_the_old_password_and_its_tokens_at_once(functions, make_tenant, database):
    tenant = make_tenant()
    device = new_device(functions, tenant)
    old_token = device_login(functions, device["username"], device["password"]).get_json()["access_token"]

    rotated = functions["admin"].post(f"/api/v1/admin/devices/{device['id']}/rotate", headers=tenant.headers["admin"])

    assert rotated.status_code == 200, rotated.get_data(as_text=True)
    new_password = rotated.get_json()["password"]
    assert new_password != device["password"]
    assert device_login(functions, device["username"], device["password"]).status_code == 401
    assert upload(functions, old_token).status_code == 401
    new_token = device_login(functions, device["username"], new_password).get_json()["access_token"]
    assert upload(functions, new_token).status_code == 201
    assert ("device.rotate", device["id"]) in [(row[0], row[2]) for row in audit_actions(database, tenant)]


def test_rotation_with_a_grace_period_keeps_the_old_password_until_it_ends(
    make_tenant, database, redis_client, token_settings
):
    tenant = make_tenant()
    clock = SetClock(datetime.now(timezone.utc))
    states = AccountStates(database, redis_client)
    devices = DevicesService(database, AdminSettings(), states, clock=clock)
    auth = AuthService(database, TokenService(token_settings, clock=clock), LoginSettings(), states=states)
    owner = auth.tokens.verify_access(tenant.headers["owner"]["Authorization"].split()[1])
    device = devices.create(owner, {"username": f"it-ha-{uuid.uuid4().hex[:12]}"}, ORIGIN)
    session = auth.login(Credentials(device["username"], device["password"]), "device", "10.30.0.2")

    rotated = devices.rotate(owner, device["id"], {"grace_s": 3600}, ORIGIN)
    clock.advance(1800)

    during = auth.login(Credentials(device["username"], device["password"]), "device", "10.30.0.2")
    assert auth.refresh(session["refresh_token"])["access_token"]
    clock.advance(1801)
    with pytest.raises(UnauthorizedError):
        auth.login(Credentials(device["username"], device["password"]), "device", "10.30.0.3")
    with pytest.raises(UnauthorizedError, match="revoked"):
        auth.refresh(during["refresh_token"])
    assert auth.login(Credentials(device["username"], rotated["password"]), "device", "10.30.0.2")["access_token"]
    assert rotated["old_password_valid_until"] is not None


def test_a_grace_period_longer_than_allowed_and_bad_bodies_answer_422_with_paths(functions, make_tenant):
    tenant = make_tenant()
    device = new_device(functions, tenant)
    admin = functions["admin"]

    answers = [
        admin.post(
            f"/api/v1/admin/devices/{device['id']}/rotate", json={"grace_s": 86401}, headers=tenant.headers["admin"]
        ),
        admin.post("/api/v1/admin/devices", json={"username": 5, "color": "red"}, headers=tenant.headers["admin"]),
        admin.post("/api/v1/admin/devices", json={"username": "has space"}, headers=tenant.headers["admin"]),
        admin.patch("/api/v1/admin/equipment/x", json={"retired": "yes", "name": ""}, headers=tenant.headers["admin"]),
        admin.patch(
            "/api/v1/admin/tenant", json={"timezone": "Mars/Olympus", "language": "fr"}, headers=tenant.headers["owner"]
        ),
    ]

    assert [answer.status_code for answer in answers] == [422] * 5
    assert [answer.get_json()["paths"] for answer in answers] == [
        ["$.grace_s"],
        ["$.color", "$.username"],
        ["$.username"],
        ["$.name", "$.retired"],
        ["$.timezone", "$.language"],
    ]


def test_blocking_stops_the_next_upload_and_unblocking_admits_a_new_login(functions, make_tenant):
    tenant = make_tenant()
    device = new_device(functions, tenant)
    token = device_login(functions, device["username"], device["password"]).get_json()["access_token"]

    blocked = functions["admin"].post(f"/api/v1/admin/devices/{device['id']}/block", headers=tenant.headers["admin"])

    assert blocked.get_json()["state"] == "blocked"
    assert upload(functions, token).status_code == 401
    assert device_login(functions, device["username"], device["password"]).status_code == 401
    unblocked = functions["admin"].post(
        f"/api/v1/admin/devices/{device['id']}/unblock", headers=tenant.headers["admin"]
    )
    assert unblocked.get_json()["state"] == "active"
    again = device_login(functions, device["username"], device["password"]).get_json()["access_token"]
    assert upload(functions, again).status_code == 201


def test_a_deleted_device_cannot_log_in_its_username_stays_taken_and_its_batches_stay(functions, make_tenant, database):
    tenant, other = make_tenant(), make_tenant()
    device = new_device(functions, tenant)
    token = device_login(functions, device["username"], device["password"]).get_json()["access_token"]
    batch = upload(functions, token)
    assert batch.status_code == 201
    # ingest writes the accepted batch's ledger row off the request path, within its flush interval
    wait_until(lambda: batches_of(database, device["id"]) == 1, 10, 0.05, "the accepted batch's ledger row")

    deleted = functions["admin"].delete(f"/api/v1/admin/devices/{device['id']}", headers=tenant.headers["admin"])

    assert deleted.get_json()["state"] == "deleted"
    assert upload(functions, token).status_code == 401
    assert device_login(functions, device["username"], device["password"]).status_code == 401
    for headers in (tenant.headers["admin"], other.headers["admin"]):
        taken = functions["admin"].post("/api/v1/admin/devices", json={"username": device["username"]}, headers=headers)
        assert taken.status_code == 409
        assert tenant.name not in taken.get_data(as_text=True)
    assert batches_of(database, device["id"]) == 1
    again = functions["admin"].post(f"/api/v1/admin/devices/{device['id']}/unblock", headers=tenant.headers["admin"])
    assert again.status_code == 409


def test_another_tenants_ids_answer_404_and_roles_are_checked(functions, make_tenant):
    tenant, other = make_tenant(), make_tenant()
    device = new_device(functions, tenant)
    admin = functions["admin"]
    theirs = other.headers["owner"]

    assert [
        admin.post(f"/api/v1/admin/devices/{device['id']}/rotate", headers=theirs).status_code,
        admin.post(f"/api/v1/admin/devices/{device['id']}/block", headers=theirs).status_code,
        admin.delete(f"/api/v1/admin/devices/{device['id']}", headers=theirs).status_code,
        admin.post("/api/v1/admin/devices/not-a-uuid/block", headers=theirs).status_code,
    ] == [404] * 4
    assert admin.get("/api/v1/admin/devices", headers=theirs).get_json()["devices"] == []
    viewer, admin_headers = tenant.headers["viewer"], tenant.headers["admin"]
    refused = [
        admin.post("/api/v1/admin/devices", json={"username": "it-never"}, headers=viewer),
        admin.post(f"/api/v1/admin/devices/{device['id']}/block", headers=viewer),
        admin.delete(f"/api/v1/admin/devices/{device['id']}", headers=viewer),
        admin.patch("/api/v1/admin/equipment/x", json={"retired": True}, headers=viewer),
        admin.patch("/api/v1/admin/tenant", json={"language": "en"}, headers=admin_headers),
    ]
    assert [answer.status_code for answer in refused] == [403] * 5
    assert admin.get("/api/v1/admin/devices", headers={}).status_code == 401


@pytest.fixture
def processor(database, blobs) -> BatchProcessor:
    return BatchProcessor(ProcessSettings(), UploadLimits(), RetentionSettings(), database, blobs, keyring=TEST_KEYRING)


@dataclass
class Uploader:
    """What a claim check names of the device that uploaded it (support.claims.stage)."""

    tenant_id: str
    account_id: str
    username: str


def test_process_records_the_devices_uploads_readings_and_times(functions, make_tenant, database, blobs, processor):
    tenant = make_tenant()
    device = new_device(functions, tenant)
    uploader = Uploader(tenant.id, device["id"], device["username"])
    items = recent_sample("ha-bulk-small.json")

    first_claim = stage(blobs, uploader, items)
    first = processor.process(first_claim)
    processor.process(first_claim)  # redelivered: counted once
    resent_claim = stage(blobs, uploader, items)
    processor.process(resent_claim)  # resent: an upload of its own, its readings all duplicates

    listed = functions["admin"].get("/api/v1/admin/devices", headers=tenant.headers["admin"]).get_json()["devices"][0]
    assert (listed["uploads_24h"], listed["readings_24h"]) == (2, 2 * first.readings)
    assert datetime.fromisoformat(listed["last_upload_at"]) == datetime.fromisoformat(resent_claim.received_at)
    with database.transaction() as cursor:
        cursor.execute(
            "SELECT max(t.ts) FROM telemetry_data t JOIN sensors s ON s.id = t.sensor_id WHERE s.tenant_id = %s",
            (tenant.id,),
        )
        newest = cursor.fetchone()[0]
    assert datetime.fromisoformat(listed["last_reading_at"]) == newest


def test_equipment_overrides_survive_uploads_and_retired_equipment_is_hidden_and_not_watched(
    functions, make_tenant, database, blobs, processor
):
    tenant = make_tenant()
    device = new_device(functions, tenant)
    uploader = Uploader(tenant.id, device["id"], device["username"])
    processor.process(stage(blobs, uploader, recent_sample("ha-bulk-mixed.json")))
    kept, retired = "0f8f3c1e-4d7a-4c55-9d2e-6b1f7a9e2c01", "7c1d2e3f-9a8b-4c7d-8e6f-5a4b3c2d1e0f"
    admin = functions["admin"]

    renamed = admin.patch(
        f"/api/v1/admin/equipment/{kept}",
        json={"name": "Freezer da entrada", "location": "Loja 1"},
        headers=tenant.headers["admin"],
    )
    retiring = admin.patch(
        f"/api/v1/admin/equipment/{retired}", json={"retired": True}, headers=tenant.headers["admin"]
    )
    processor.process(stage(blobs, uploader, recent_sample("ha-bulk-mixed.json", hours_ago=2)))

    assert (renamed.status_code, retiring.status_code) == (200, 200)
    shown = analytics_equipment(functions, tenant)
    assert list(shown) == [kept]
    assert (shown[kept]["name"], shown[kept]["location"]) == ("Freezer da entrada", "Loja 1")
    listed = admin.get("/api/v1/admin/equipment", headers=tenant.headers["viewer"]).get_json()["equipment"]
    assert [(e["equipment_uuid"], e["retired"], e["reported_name"]) for e in listed] == [
        (kept, False, "Freezer Sorvetes"),
        (retired, True, "Câmara Fria 2"),
    ]
    with database.transaction() as cursor:
        cursor.execute("SELECT uuid, id FROM equipment WHERE tenant_id = %s", (tenant.id,))
        ids = dict(cursor.fetchall())
        store.record_uploads(cursor, tenant.id, sorted(ids.values()), datetime.now(timezone.utc), 5)
        watched = store.equipment_last_uploads(cursor, tenant.id)
    assert list(watched) == [ids[kept]]


def analytics_equipment(functions, tenant: Tenant) -> dict:
    answer = functions["analytics"].get("/api/v1/analytics/equipments", headers=tenant.headers["viewer"])
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return {item["equipment_uuid"]: item for item in answer.get_json()["equipments"]}


def test_a_time_zone_change_needs_confirmation_and_the_language_is_kept(functions, make_tenant, database):
    tenant = make_tenant()
    admin, owner = functions["admin"], tenant.headers["owner"]

    refused = admin.patch("/api/v1/admin/tenant", json={"timezone": "Europe/Lisbon"}, headers=owner)
    changed = admin.patch(
        "/api/v1/admin/tenant", json={"timezone": "Europe/Lisbon", "confirm": True, "language": "en"}, headers=owner
    )

    assert refused.status_code == 409
    assert refused.get_json()["paths"] == ["$.confirm"]
    assert changed.status_code == 200
    settings = admin.get("/api/v1/admin/tenant", headers=tenant.headers["viewer"]).get_json()
    assert (settings["timezone"], settings["language"], settings["name"]) == ("Europe/Lisbon", "en", tenant.name)
    assert ("tenant.update", tenant.id) in [(row[0], row[2]) for row in audit_actions(database, tenant)]


def test_notify_writes_in_the_language_the_tenant_chose(functions, make_tenant, database):
    tenant = make_tenant()
    notify = NotifyService(
        database,
        NotifySettings(),
        WebhookSender(AddressPolicy(allow_loopback=True), timeout_s=2.0),
        Mailer(SmtpSettings(smtp_host="127.0.0.1", smtp_port=1, smtp_security="none")),
    )
    assert notify.language_of(tenant.id) == "pt-BR"

    functions["admin"].patch("/api/v1/admin/tenant", json={"language": "en"}, headers=tenant.headers["owner"])

    assert notify.language_of(tenant.id) == "en"


def test_a_rotation_without_grace_ends_an_earlier_rotations_grace_at_once(make_tenant, database, token_settings):
    tenant = make_tenant()
    devices = DevicesService(database, AdminSettings())
    auth = AuthService(database, TokenService(token_settings), LoginSettings())
    owner = auth.tokens.verify_access(tenant.headers["owner"]["Authorization"].split()[1])
    device = devices.create(owner, {"username": f"it-ha-{uuid.uuid4().hex[:12]}"}, ORIGIN)
    devices.rotate(owner, device["id"], {"grace_s": 3600}, ORIGIN)
    assert auth.login(Credentials(device["username"], device["password"]), "device", "10.30.0.4")

    latest = devices.rotate(owner, device["id"], None, ORIGIN)

    with pytest.raises(UnauthorizedError):
        auth.login(Credentials(device["username"], device["password"]), "device", "10.30.0.4")
    assert auth.login(Credentials(device["username"], latest["password"]), "device", "10.30.0.4")


def test_devices_and_equipment_are_listed_in_keyset_pages(functions, make_tenant):
    tenant = make_tenant()
    created = [new_device(functions, tenant)["id"] for _ in range(3)]
    admin, headers = functions["admin"], tenant.headers["viewer"]

    first = admin.get("/api/v1/admin/devices?limit=2", headers=headers).get_json()
    second = admin.get(f"/api/v1/admin/devices?limit=2&cursor={first['next_cursor']}", headers=headers).get_json()

    assert [d["id"] for d in first["devices"] + second["devices"]] == created
    assert second["next_cursor"] is None
    refused = admin.get(f"/api/v1/admin/equipment?cursor={first['next_cursor']}", headers=headers)
    assert refused.status_code == 400
