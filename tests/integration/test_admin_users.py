"""Roles, the users routes of the admin function, password flows of the auth function and the audit log, in process
(functions-framework's test clients) against the real PostgreSQL and Redis."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from functions_framework import create_app
from support.clock import SetClock

from easysmart import accounts, audit, cli
from easysmart.admin.users import UsersService
from easysmart.audit import Origin
from easysmart.auth import AuthService, PasswordSet
from easysmart.config import LoginSettings
from easysmart.errors import ConflictError, UnauthorizedError
from easysmart.identity import Principal, TokenService
from easysmart.web import PROXY_SECRET_HEADER

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
FRONT_PROXY_SECRET = "integration-test-front-proxy-secret-" + "a" * 16
PASSWORD = "a-long-enough-password"


class Client:
    """A client of the admin, auth, alerts and analytics functions, at an address of its own (the login limits
    count per address, and other tests log in at the same time)."""

    def __init__(self, apps: dict) -> None:
        self.apps = apps
        self.address = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"

    def call(self, app: str, method: str, path: str, token: str | None = None, body=None, **headers):
        headers = {"X-Real-IP": self.address, PROXY_SECRET_HEADER: FRONT_PROXY_SECRET, **headers}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.apps[app].open(path, method=method, json=body, headers=headers)

    def login(self, username: str, password: str = PASSWORD) -> dict:
        response = self.call("auth", "POST", "/api/v1/auth/login", body={"username": username, "password": password})
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def create_user(self, token: str, username: str, role: str) -> dict:
        response = self.call("admin", "POST", "/api/v1/admin/users", token, {"username": username, "role": role})
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def user_with_password(self, token: str, role: str) -> tuple[dict, dict]:
        """A new user of `role` who set their password and logged in: (the created user, their token pair)."""
        user = self.create_user(token, f"it-{role}-{uuid.uuid4().hex[:10]}", role)
        redeemed = self.call(
            "auth",
            "POST",
            "/api/v1/auth/password/set",
            body={"token": user["set_password_token"], "password": PASSWORD},
        )
        assert redeemed.status_code == 200, redeemed.get_json()
        return user, self.login(user["username"])


@pytest.fixture
def client(database_url, redis_url, token_settings, monkeypatch) -> Client:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("JWT_SECRET", token_settings.jwt_secret)
    monkeypatch.setenv("FRONT_PROXY_SECRET", FRONT_PROXY_SECRET)
    apps = {
        name: create_app(target="handle", source=str(FUNCTIONS / name / "main.py")).test_client()
        for name in ("admin", "auth", "alerts", "analytics")
    }
    return Client(apps)


@pytest.fixture
def owner(make_account, database):
    """An owner (an `esm`-made user) in a fresh tenant with a known password; its users go with the tenant."""
    account = make_account("user")
    with database.transaction() as cursor:
        accounts.set_password(cursor, account.username, PASSWORD)
    return account


def owner_principal(account_id: str, tenant_id: str) -> Principal:
    return Principal(account_id, tenant_id, "user", None, 1, "owner")


def audit_rows(database, tenant_id: str, action: str | None = None) -> list[tuple]:
    with database.transaction() as cursor:
        cursor.execute(
            "SELECT action, actor_id::text, actor_name, target_type, target_id, details, client_addr, request_id"
            " FROM audit_log WHERE tenant_id = %s AND (%s::text IS NULL OR action = %s) ORDER BY id",
            (tenant_id, action, action),
        )
        return cursor.fetchall()


# --- roles ---------------------------------------------------------------------------------------------


def test_owner_creates_an_admin_and_a_viewer_who_set_their_passwords_and_log_in(client, owner, database):
    owner_token = client.login(owner.username)["access_token"]

    admin, admin_pair = client.user_with_password(owner_token, "admin")
    viewer, viewer_pair = client.user_with_password(owner_token, "viewer")

    assert (admin["role"], viewer["role"]) == ("admin", "viewer")
    for user, pair in ((admin, admin_pair), (viewer, viewer_pair)):
        me = client.call("auth", "GET", "/api/v1/auth/me", pair["access_token"]).get_json()
        assert (me["account_id"], me["role"]) == (user["id"], user["role"])
    listed = client.call("admin", "GET", "/api/v1/admin/users", owner_token).get_json()["users"]
    assert {(u["username"], u["role"]) for u in listed} == {
        (owner.username, "owner"),
        (admin["username"], "admin"),
        (viewer["username"], "viewer"),
    }
    created = [row for row in audit_rows(database, owner.tenant_id, "user.create") if row[1] is not None]  # not esm's
    assert [(row[1], row[2], row[3], row[4], row[5]["role"]) for row in created] == [
        (owner.account_id, owner.username, "user", admin["id"], "admin"),
        (owner.account_id, owner.username, "user", viewer["id"], "viewer"),
    ]
    assert all(row[6] == client.address and row[7] for row in created)
    password_set = audit_rows(database, owner.tenant_id, "user.password_set")
    assert [row[4] for row in password_set] == [admin["id"], viewer["id"]]
    assert all("set_password_token" not in str(row[5]) and PASSWORD not in str(row[5]) for row in created)


def test_a_viewer_is_refused_every_write_naming_the_role_and_reads_analytics_and_alerts(client, owner):
    owner_token = client.login(owner.username)["access_token"]
    viewer, pair = client.user_with_password(owner_token, "viewer")
    token = pair["access_token"]

    writes = [
        ("admin", "POST", "/api/v1/admin/users", {"username": f"x-{uuid.uuid4().hex[:8]}", "role": "viewer"}),
        ("admin", "PATCH", f"/api/v1/admin/users/{viewer['id']}", {"blocked": True}),
        ("alerts", "POST", "/api/v1/alerts/rules", {"type": "silence", "equipment_uuid": "x", "for_s": 600}),
    ]
    for app, method, path, body in writes:
        response = client.call(app, method, path, token, body)
        assert response.status_code == 403, (path, response.get_json())
        assert response.get_json()["required_role"] == "admin" and "admin role" in response.get_json()["message"]
    for app, path in (("admin", "/api/v1/admin/users"), ("admin", "/api/v1/admin/audit")):
        assert client.call(app, "GET", path, token).status_code == 403
    assert client.call("analytics", "GET", "/api/v1/analytics/equipments", token).status_code == 200
    assert client.call("alerts", "GET", "/api/v1/alerts", token).status_code == 200


def test_admins_manage_viewers_only(client, owner):
    owner_token = client.login(owner.username)["access_token"]
    _, admin_pair = client.user_with_password(owner_token, "admin")
    other_admin = client.create_user(owner_token, f"it-admin-{uuid.uuid4().hex[:8]}", "admin")
    viewer = client.create_user(owner_token, f"it-viewer-{uuid.uuid4().hex[:8]}", "viewer")
    token = admin_pair["access_token"]

    refused = [
        ("POST", "/api/v1/admin/users", {"username": f"it-a-{uuid.uuid4().hex[:8]}", "role": "admin"}),
        ("POST", "/api/v1/admin/users", {"username": f"it-o-{uuid.uuid4().hex[:8]}", "role": "owner"}),
        ("PATCH", f"/api/v1/admin/users/{owner.account_id}", {"blocked": True}),
        ("PATCH", f"/api/v1/admin/users/{other_admin['id']}", {"role": "viewer"}),
        ("PATCH", f"/api/v1/admin/users/{viewer['id']}", {"role": "admin"}),
    ]
    for method, path, body in refused:
        response = client.call("admin", method, path, token, body)
        assert response.status_code == 403, (path, body, response.get_json())
        assert response.get_json()["required_role"] == "owner"
    blocked = client.call("admin", "PATCH", f"/api/v1/admin/users/{viewer['id']}", token, {"blocked": True})
    made = client.call(
        "admin", "POST", "/api/v1/admin/users", token, {"username": f"it-v-{uuid.uuid4().hex[:8]}", "role": "viewer"}
    )
    assert (blocked.status_code, blocked.get_json()["blocked"]) == (200, True)
    assert made.status_code == 201


def test_the_last_owner_cannot_be_demoted_or_blocked(client, owner, database):
    owner_token = client.login(owner.username)["access_token"]
    path = f"/api/v1/admin/users/{owner.account_id}"

    demoted = client.call("admin", "PATCH", path, owner_token, {"role": "admin"})
    blocked = client.call("admin", "PATCH", path, owner_token, {"blocked": True})

    for response in (demoted, blocked):
        assert response.status_code == 409 and response.get_json()["error"] == "last_owner"
        assert "last owner" in response.get_json()["message"]
    second = client.create_user(owner_token, f"it-owner-{uuid.uuid4().hex[:8]}", "owner")
    assert client.call("admin", "PATCH", path, owner_token, {"role": "admin"}).status_code == 200
    with database.transaction() as cursor:
        cursor.execute("SELECT role FROM accounts WHERE id = %s", (second["id"],))
        assert cursor.fetchone() == ("owner",)


def test_two_owners_demoting_each_other_at_once_leave_one_owner(database, make_account):
    first = make_account("user")
    with database.transaction() as cursor:
        second_id = accounts.create_account(cursor, first.tenant_name, "user", f"it-o-{uuid.uuid4().hex[:8]}", "pw")
    users = UsersService(database)
    principals = [owner_principal(first.account_id, first.tenant_id), owner_principal(second_id, first.tenant_id)]
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def demote(actor, target_id):
        barrier.wait()
        try:
            users.update(actor, target_id, {"role": "viewer"}, Origin("it"))
            outcomes.append("demoted")
        except ConflictError:
            outcomes.append("refused")

    threads = [
        threading.Thread(target=demote, args=(principals[0], second_id)),
        threading.Thread(target=demote, args=(principals[1], first.account_id)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["demoted", "refused"]
    with database.transaction() as cursor:
        cursor.execute("SELECT count(*) FROM accounts WHERE tenant_id = %s AND role = 'owner'", (first.tenant_id,))
        assert cursor.fetchone() == (1,)


def test_a_role_change_takes_effect_on_the_next_request(client, owner):
    owner_token = client.login(owner.username)["access_token"]
    viewer, pair = client.user_with_password(owner_token, "viewer")
    assert client.call("admin", "GET", "/api/v1/admin/users", pair["access_token"]).status_code == 403

    promoted = client.call("admin", "PATCH", f"/api/v1/admin/users/{viewer['id']}", owner_token, {"role": "admin"})
    stale = client.call("admin", "GET", "/api/v1/admin/users", pair["access_token"])
    refreshed = client.call("auth", "POST", "/api/v1/auth/refresh", body={"refresh_token": pair["refresh_token"]})
    fresh = client.call("admin", "GET", "/api/v1/admin/users", refreshed.get_json()["access_token"])

    assert promoted.status_code == 200 and promoted.get_json()["role"] == "admin"
    assert stale.status_code == 401  # the old token carried the old role: the version bump refuses it
    assert refreshed.status_code == 200 and fresh.status_code == 200


# --- passwords -------------------------------------------------------------------------------------------


def test_a_set_password_token_is_single_use_and_expires_after_24_hours(database, token_settings, owner):
    clock = SetClock()
    users = UsersService(database, clock=clock)
    auth = AuthService(database, TokenService(token_settings, clock), LoginSettings())
    actor = owner_principal(owner.account_id, owner.tenant_id)
    first = users.create(actor, {"username": f"it-u-{uuid.uuid4().hex[:8]}", "role": "viewer"}, Origin("it"))
    second = users.create(actor, {"username": f"it-u-{uuid.uuid4().hex[:8]}", "role": "viewer"}, Origin("it"))

    clock.advance(23 * 3600)
    auth.set_password(PasswordSet(first["set_password_token"], PASSWORD), "10.0.0.1")
    with pytest.raises(UnauthorizedError, match="unknown, used or expired"):
        auth.set_password(PasswordSet(first["set_password_token"], PASSWORD + "2"), "10.0.0.1")
    clock.advance(3600)
    with pytest.raises(UnauthorizedError, match="unknown, used or expired"):
        auth.set_password(PasswordSet(second["set_password_token"], PASSWORD), "10.0.0.1")


def test_a_reset_answers_a_new_token_and_stops_the_old_password_at_once(client, owner):
    owner_token = client.login(owner.username)["access_token"]
    viewer, pair = client.user_with_password(owner_token, "viewer")

    reset = client.call("admin", "PATCH", f"/api/v1/admin/users/{viewer['id']}", owner_token, {"reset_password": True})
    old_password = client.call(
        "auth", "POST", "/api/v1/auth/login", body={"username": viewer["username"], "password": PASSWORD}
    )
    old_token = client.call("auth", "GET", "/api/v1/auth/me", pair["access_token"])
    redeemed = client.call(
        "auth",
        "POST",
        "/api/v1/auth/password/set",
        body={"token": reset.get_json()["set_password_token"], "password": "another-long-password"},
    )

    assert reset.status_code == 200 and reset.get_json()["set_password_expires_at"]
    assert old_password.status_code == 401 and old_token.status_code == 401
    assert redeemed.status_code == 200
    assert client.login(viewer["username"], "another-long-password")["access_token"]


def test_changing_ones_own_password_needs_the_old_one_and_ends_every_session(client, owner):
    first, second = client.login(owner.username), client.login(owner.username)
    path = "/api/v1/auth/password"

    wrong = client.call("auth", "POST", path, first["access_token"], {"old_password": "nope", "new_password": "x" * 12})
    short = client.call("auth", "POST", path, first["access_token"], {"old_password": PASSWORD, "new_password": "x"})
    changed = client.call(
        "auth", "POST", path, first["access_token"], {"old_password": PASSWORD, "new_password": "a-new-password-1"}
    )

    assert wrong.status_code == 403 and wrong.get_json()["path"] == "$.old_password"
    assert short.status_code == 422 and short.get_json()["paths"] == ["$.new_password"]
    assert changed.status_code == 200
    for old in (first, second):
        refreshed = client.call("auth", "POST", "/api/v1/auth/refresh", body={"refresh_token": old["refresh_token"]})
        assert refreshed.status_code == 401
        assert client.call("auth", "GET", "/api/v1/auth/me", old["access_token"]).status_code == 401
    assert client.call("auth", "GET", "/api/v1/auth/me", changed.get_json()["access_token"]).status_code == 200
    assert client.login(owner.username, "a-new-password-1")["access_token"]


# --- the routes' answers -------------------------------------------------------------------------------


def test_other_tenants_users_are_404_and_taken_usernames_409_without_saying_where(client, owner, make_account):
    stranger = make_account("user")
    owner_token = client.login(owner.username)["access_token"]

    foreign = client.call(
        "admin", "PATCH", f"/api/v1/admin/users/{stranger.account_id}", owner_token, {"role": "viewer"}
    )
    not_a_uuid = client.call("admin", "PATCH", "/api/v1/admin/users/nope", owner_token, {"role": "viewer"})
    taken = client.call(
        "admin", "POST", "/api/v1/admin/users", owner_token, {"username": stranger.username, "role": "viewer"}
    )

    assert foreign.status_code == 404 and not_a_uuid.status_code == 404
    assert taken.status_code == 409 and stranger.tenant_name not in str(taken.get_json())


def test_no_token_is_401(client, owner):
    for method, path in (
        ("GET", "/api/v1/admin/users"),
        ("POST", "/api/v1/admin/users"),
        ("PATCH", f"/api/v1/admin/users/{owner.account_id}"),
        ("GET", "/api/v1/admin/audit"),
    ):
        assert client.call("admin", method, path, body={}).status_code == 401, path
    assert client.call("auth", "POST", "/api/v1/auth/password", body={}).status_code == 401


def test_bad_bodies_are_422_with_paths(client, owner):
    owner_token = client.login(owner.username)["access_token"]
    users, user = "/api/v1/admin/users", f"/api/v1/admin/users/{owner.account_id}"

    cases = [
        ("POST", users, {"username": "has space", "role": "king", "extra": 1}, ["$.extra", "$.username", "$.role"]),
        ("POST", users, [1], ["$"]),
        ("PATCH", user, {}, ["$"]),
        ("PATCH", user, {"blocked": "yes", "reset_password": False}, ["$.blocked", "$.reset_password"]),
    ]
    for method, path, body, paths in cases:
        response = client.call("admin", method, path, owner_token, body)
        assert response.status_code == 422, (body, response.get_json())
        assert response.get_json()["paths"] == paths


# --- the audit log ---------------------------------------------------------------------------------------


def test_failed_logins_are_audited_once_per_account_address_and_minute(client, owner, database):
    for _ in range(3):
        response = client.call(
            "auth", "POST", "/api/v1/auth/login", body={"username": owner.username, "password": "wrong"}
        )
        assert response.status_code == 401
    client.call("auth", "POST", "/api/v1/auth/login", body={"username": f"nobody-{uuid.uuid4().hex}", "password": "x"})

    failed = audit_rows(database, owner.tenant_id, "login.failed")

    assert len(failed) == 1
    action, actor_id, actor_name, target_type, target_id, details, address, _ = failed[0]
    assert (actor_id, actor_name, target_type, target_id, address) == (
        None,
        "anonymous",
        "account",
        owner.account_id,
        client.address,
    )
    assert details == {"username": owner.username, "count": 3}


def test_the_first_login_of_a_day_is_audited_with_the_address_and_user_agent(client, owner, database):
    for _ in range(2):
        response = client.call(
            "auth",
            "POST",
            "/api/v1/auth/login",
            body={"username": owner.username, "password": PASSWORD},
            **{"User-Agent": "HomeAssistant/2026.11"},
        )
        assert response.status_code == 200

    with database.transaction() as cursor:
        cursor.execute(
            "SELECT actor_id::text, client_addr, user_agent, details FROM audit_log WHERE tenant_id = %s"
            " AND action = 'login'",
            (owner.tenant_id,),
        )
        rows = cursor.fetchall()
    assert rows == [(owner.account_id, client.address, "HomeAssistant/2026.11", {"count": 2})]


def test_the_audit_route_filters_and_pages(client, owner, database):
    owner_token = client.login(owner.username)["access_token"]
    viewer = client.create_user(owner_token, f"it-v-{uuid.uuid4().hex[:8]}", "viewer")
    for blocked in (True, False, True):
        path = f"/api/v1/admin/users/{viewer['id']}"
        assert client.call("admin", "PATCH", path, owner_token, {"blocked": blocked}).status_code == 200

    first = (
        client.apps["admin"]
        .get(
            "/api/v1/admin/audit",
            query_string={"target_id": viewer["id"], "limit": 2},
            headers={"Authorization": f"Bearer {owner_token}"},
        )
        .get_json()
    )
    rest = (
        client.apps["admin"]
        .get(
            "/api/v1/admin/audit",
            query_string={"target_id": viewer["id"], "limit": 2, "cursor": first["next_cursor"]},
            headers={"Authorization": f"Bearer {owner_token}"},
        )
        .get_json()
    )
    actions = [entry["action"] for entry in first["entries"] + rest["entries"]]
    assert actions == ["user.block", "user.unblock", "user.block", "user.create"]
    assert rest["next_cursor"] is None
    assert all(entry["actor"] == {"id": owner.account_id, "name": owner.username} for entry in first["entries"])
    blocks = (
        client.apps["admin"]
        .get(
            "/api/v1/admin/audit",
            query_string={"action": "user.block", "actor": owner.username},
            headers={"Authorization": f"Bearer {owner_token}"},
        )
        .get_json()["entries"]
    )
    assert len(blocks) == 2
    future = (
        client.apps["admin"]
        .get(
            "/api/v1/admin/audit",
            query_string={"start_date": "2099-01-01T00:00:00Z"},
            headers={"Authorization": f"Bearer {owner_token}"},
        )
        .get_json()["entries"]
    )
    assert future == []


def test_esm_changes_are_audited_with_the_operator_as_actor(database, make_account):
    account = make_account("device")

    with database.transaction() as cursor:
        accounts.set_blocked(cursor, account.username, True)

    rows = audit_rows(database, account.tenant_id)
    assert [(row[0], row[1], row[3], row[4]) for row in rows] == [
        ("tenant.create", None, "tenant", account.tenant_id),
        ("device.create", None, "device", account.account_id),
        ("account.block", None, "device", account.account_id),
    ]
    assert all(row[2].startswith("esm") for row in rows)


def test_audit_rows_past_the_retention_are_pruned(database, make_account):
    account = make_account("user")
    clock = SetClock()
    with database.transaction() as cursor:
        audit.record(
            cursor, None, "old.action", "user", account.account_id, {}, None, None, None,
            tenant_id=account.tenant_id, at=clock.now - timedelta(days=401),
        )  # fmt: skip

    report = audit.prune(database, clock.now, retention_days=400)

    assert report["audit_rows_pruned"] >= 1
    assert [row[0] for row in audit_rows(database, account.tenant_id)] == ["tenant.create", "user.create"]


def test_details_never_carry_a_secret_and_are_bounded(database, make_account):
    account = make_account("user")

    with database.transaction() as cursor:
        audit.record(
            cursor, None, "x", "user", None, {"new_password": "p", "nested": {"refresh_token": "t"}}, None, None,
            None, tenant_id=account.tenant_id,
        )  # fmt: skip
        audit.record(
            cursor, None, "y", "user", None, {"big": "b" * 10000}, None, None, None, tenant_id=account.tenant_id
        )

    details = {row[0]: row[5] for row in audit_rows(database, account.tenant_id)}
    assert details["x"] == {"new_password": "[redacted]", "nested": {"refresh_token": "[redacted]"}}
    assert details["y"] == {"truncated": True, "keys": ["big"]}


def test_a_block_through_the_api_refuses_the_users_next_request(redis_client, client, owner):
    """A block through the API reaches Redis at once: the blocked user's next request is refused."""
    owner_token = client.login(owner.username)["access_token"]
    viewer, pair = client.user_with_password(owner_token, "viewer")
    client.call("admin", "PATCH", f"/api/v1/admin/users/{viewer['id']}", owner_token, {"blocked": True})

    fields = redis_client.hgetall(f"account:{viewer['id']}")

    assert fields[b"blocked"] == b"1"
    assert client.call("analytics", "GET", "/api/v1/analytics/equipments", pair["access_token"]).status_code == 401


def test_esm_creates_a_user_of_a_role_and_sets_a_locked_out_owners_password(
    client, owner, database, database_url, monkeypatch
):
    monkeypatch.setenv("DATABASE_URL", database_url)
    viewer = f"it-esm-{uuid.uuid4().hex[:8]}"

    cli.main(["account", "create", "--tenant", owner.tenant_name, "--kind", "user", viewer, "--role", "viewer",
              "--password", PASSWORD])  # fmt: skip
    cli.main(["account", "set-password", owner.username, "--password", "the-owners-new-password"])

    assert client.call("auth", "GET", "/api/v1/auth/me", client.login(viewer)["access_token"]).get_json()["role"] == (
        "viewer"
    )
    assert client.login(owner.username, "the-owners-new-password")["access_token"]
    actions = [(row[0], row[2].startswith("esm")) for row in audit_rows(database, owner.tenant_id)]
    assert ("user.create", True) in actions and ("account.password_set", True) in actions
