"""auth against the real PostgreSQL and Redis: logins, lockout per (username, address) and throttling per username,
answers that tell nothing apart, refresh rotation and its retry window, blocks and pruning, through the service layer
and through the HTTP function as functions-framework serves it."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis
from functions_framework import create_app
from support.clock import SetClock

from easysmart import accounts, cli
from easysmart import auth as auth_module
from easysmart.auth import REFRESH_RETRY_S, AuthService, Credentials
from easysmart.config import LoginSettings
from easysmart.errors import RateLimitedError, UnauthorizedError
from easysmart.identity import Principal, TokenService
from easysmart.ratelimit import RateLimiter
from easysmart.web import PROXY_SECRET_HEADER

MAIN = Path(__file__).resolve().parents[2] / "functions" / "auth" / "main.py"


@pytest.fixture
def clock() -> SetClock:
    return SetClock()


@pytest.fixture
def auth(database, token_settings, login_settings, clock) -> AuthService:
    return AuthService(database, TokenService(token_settings, clock), login_settings)


def login(auth: AuthService, account, address: str = "10.0.0.1", password: str | None = None, kind: str | None = None):
    return auth.login(
        Credentials(account.username, account.password if password is None else password), kind or account.kind, address
    )


def fail(auth: AuthService, account, address: str, times: int) -> None:
    for _ in range(times):
        with pytest.raises(UnauthorizedError, match="invalid username or password"):
            login(auth, account, address, password="wrong-password")


# --- logins ----------------------------------------------------------------------------------------


def test_device_login_returns_a_pair_whose_access_token_names_the_device(auth, make_account):
    account = make_account("device")

    pair = login(auth, account)

    principal = auth.tokens.verify_access(pair["access_token"])
    assert (principal.account_id, principal.tenant_id, principal.kind, principal.username) == (
        account.account_id,
        account.tenant_id,
        "device",
        account.username,
    )
    assert pair["token_type"] == "bearer" and pair["expires_in"] == 15 * 60
    with pytest.raises(UnauthorizedError, match="refresh token cannot be used as an access token"):
        auth.tokens.verify_access(pair["refresh_token"])


def test_an_account_at_the_other_kinds_route_gets_the_wrong_password_answer(auth, make_account):
    device, user = make_account("device"), make_account("user")

    with pytest.raises(UnauthorizedError) as device_at_user_route:
        login(auth, device, kind="user")
    with pytest.raises(UnauthorizedError) as user_at_device_route:
        login(auth, user, kind="device")
    with pytest.raises(UnauthorizedError) as wrong_password:
        login(auth, device, password="nope")

    assert device_at_user_route.value.message == user_at_device_route.value.message == wrong_password.value.message
    assert login(auth, user)["account_type"] == "user"


def test_an_unknown_username_answers_like_a_wrong_password_and_still_runs_the_kdf(auth, make_account, monkeypatch):
    known = make_account("device")
    calls = []
    real_verify = auth_module.verify_password
    monkeypatch.setattr(
        auth_module, "verify_password", lambda pw, stored: calls.append(stored) or real_verify(pw, stored)
    )

    with pytest.raises(UnauthorizedError) as unknown:
        auth.login(Credentials(f"nobody-{known.username}", "whatever"), "device", "10.0.0.1")
    with pytest.raises(UnauthorizedError) as wrong:
        login(auth, known, password="whatever")

    assert unknown.value.message == wrong.value.message
    assert len(calls) == 2 and all(stored.startswith("scrypt$16384$8$1$") for stored in calls)


# --- lockout and throttling -------------------------------------------------------------------------


def test_five_failures_lock_the_username_from_that_address_only(auth, make_account, login_settings):
    account = make_account("device")
    fail(auth, account, "10.0.0.2", login_settings.login_max_failures)

    with pytest.raises(RateLimitedError) as locked:
        login(auth, account, "10.0.0.2")  # even the right password

    assert locked.value.status == 429
    assert locked.value.retry_after_s == login_settings.login_lockout_s
    assert login(auth, account, "10.0.0.3")["access_token"]


def test_four_failures_do_not_lock(auth, make_account, login_settings):
    account = make_account("device")
    fail(auth, account, "10.0.0.4", login_settings.login_max_failures - 1)

    assert login(auth, account, "10.0.0.4")["access_token"]


def test_a_success_resets_the_failure_count(auth, make_account, login_settings):
    account = make_account("device")
    fail(auth, account, "10.0.0.5", login_settings.login_max_failures - 1)
    login(auth, account, "10.0.0.5")

    fail(auth, account, "10.0.0.5", login_settings.login_max_failures - 1)

    assert login(auth, account, "10.0.0.5")["access_token"]


def test_failures_from_other_addresses_below_the_username_threshold_do_not_add_up(auth, make_account, login_settings):
    account = make_account("user")
    for number in range(login_settings.login_username_max_failures - 1):
        fail(auth, account, f"10.1.0.{number}", 1)

    assert login(auth, account, "10.1.0.0")["access_token"]


def test_a_lock_holds_until_it_runs_out_then_lets_the_account_in_again(auth, make_account, login_settings, clock):
    account = make_account("device")
    fail(auth, account, "10.0.0.6", login_settings.login_max_failures)

    clock.advance(login_settings.login_lockout_s - 1)
    with pytest.raises(RateLimitedError) as locked:
        login(auth, account, "10.0.0.6")
    assert locked.value.retry_after_s == 1
    clock.advance(1)
    assert login(auth, account, "10.0.0.6")["access_token"]


def test_after_a_lock_runs_out_one_failure_does_not_lock_again(auth, make_account, login_settings, clock):
    account = make_account("device")
    fail(auth, account, "10.0.0.7", login_settings.login_max_failures)
    clock.advance(login_settings.login_lockout_s)

    fail(auth, account, "10.0.0.7", 1)

    assert login(auth, account, "10.0.0.7")["access_token"]


@pytest.fixture
def strict_auth(database, token_settings, clock) -> AuthService:
    """A per-username threshold of 3 failures from any address, waits of 1 s doubling up to 4 s."""
    settings = LoginSettings(login_username_max_failures=3, login_throttle_max_s=4)
    return AuthService(database, TokenService(token_settings, clock), settings)


def test_wrong_logins_from_six_addresses_slow_the_username_down_but_never_lock_its_owner_out(
    strict_auth, make_account, clock
):
    account = make_account("device")
    waits = []
    for number in range(6):
        address = f"10.5.0.{number}"
        try:
            fail(strict_auth, account, address, 1)
        except RateLimitedError as throttled:  # the attacker waited the delay and guessed again
            waits.append(throttled.retry_after_s)
            clock.advance(throttled.retry_after_s)
            fail(strict_auth, account, address, 1)

    with pytest.raises(RateLimitedError) as owner_too_early:
        login(strict_auth, account, "10.5.1.1")  # from any address, the owner's too, before the delay ends
    clock.advance(owner_too_early.value.retry_after_s)
    pair = login(strict_auth, account, "10.5.1.1")

    assert waits == [1, 2, 4]  # after the 3rd, 4th and 5th failures: 1 s doubling, capped at 4 s here
    assert owner_too_early.value.retry_after_s == 4
    assert pair["access_token"]
    assert login(strict_auth, account, "10.5.1.1")["access_token"]  # a success reset the username's count


def test_throttled_and_locked_answers_are_the_same_for_known_and_unknown_usernames(
    strict_auth, make_account, login_settings
):
    known = make_account("device")
    unknown = Credentials(f"nobody-{uuid.uuid4().hex}", "guess")
    answers = []
    for credentials, address in ((Credentials(known.username, "guess"), "10.6.0.1"), (unknown, "10.6.0.2")):
        for _ in range(login_settings.login_max_failures):
            try:
                strict_auth.login(credentials, "device", address)
            except (UnauthorizedError, RateLimitedError):
                pass
        with pytest.raises(RateLimitedError) as refused:
            strict_auth.login(credentials, "device", address)
        answers.append((refused.value.status, refused.value.to_body()))

    assert answers[0] == answers[1]
    assert answers[0][0] == 429


def test_an_address_past_the_login_rate_limit_gets_429_whatever_the_username(
    database, token_settings, clock, redis_client, make_account
):
    settings = LoginSettings(login_ratelimit_per_minute=3)
    auth = AuthService(database, TokenService(token_settings, clock), settings, RateLimiter(redis_client))
    account, address = make_account("device"), f"10.7.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    for _ in range(3):
        login(auth, account, address)

    with pytest.raises(RateLimitedError) as limited:
        login(auth, account, address)

    assert limited.value.retry_after_s >= 1 and "from this address" in limited.value.message
    assert login(auth, account, "10.7.255.1")["access_token"]  # another address is not limited


def test_redis_down_skips_the_login_rate_limit_but_the_database_counts_still_lock(
    database, token_settings, clock, make_account, login_settings
):
    closed_port = redis.Redis(host="127.0.0.1", port=1, socket_timeout=1, socket_connect_timeout=1)
    settings = LoginSettings(login_ratelimit_per_minute=1)
    auth = AuthService(database, TokenService(token_settings, clock), settings, RateLimiter(closed_port))
    account = make_account("device")

    assert login(auth, account, "10.8.0.1")["access_token"]
    assert login(auth, account, "10.8.0.1")["access_token"]  # the limit of 1 a minute is not enforced
    fail(auth, account, "10.8.0.1", login_settings.login_max_failures)
    with pytest.raises(RateLimitedError):
        login(auth, account, "10.8.0.1")


# --- refresh ---------------------------------------------------------------------------------------


def test_a_refresh_token_rotates_and_a_reused_one_revokes_its_family(auth, make_account, clock):
    account = make_account("user")
    first = login(auth, account)

    second = auth.refresh(first["refresh_token"])
    assert second["refresh_token"] != first["refresh_token"]
    assert auth.tokens.verify_access(second["access_token"]).account_id == account.account_id

    clock.advance(REFRESH_RETRY_S + 1)
    with pytest.raises(UnauthorizedError, match="already used"):
        auth.refresh(first["refresh_token"])
    with pytest.raises(UnauthorizedError, match="revoked"):
        auth.refresh(second["refresh_token"])


def test_a_reuse_revokes_only_its_own_family(auth, make_account, clock):
    account = make_account("device")
    stolen, other_session = login(auth, account), login(auth, account, "10.9.9.9")
    auth.refresh(stolen["refresh_token"])
    clock.advance(REFRESH_RETRY_S + 1)

    with pytest.raises(UnauthorizedError):
        auth.refresh(stolen["refresh_token"])

    assert auth.refresh(other_session["refresh_token"])["access_token"]


def test_a_refresh_retried_within_30_s_answers_the_same_pair_and_after_30_s_revokes_the_family(
    auth, make_account, clock
):
    account = make_account("device")
    first = login(auth, account)
    second = auth.refresh(first["refresh_token"])

    clock.advance(29)
    retried = auth.refresh(first["refresh_token"])  # the client lost the answer and asks again
    clock.advance(2)
    with pytest.raises(UnauthorizedError, match="already used"):
        auth.refresh(first["refresh_token"])  # 31 s after the first use: a reuse

    assert retried == second
    with pytest.raises(UnauthorizedError, match="revoked"):
        auth.refresh(second["refresh_token"])


def test_a_retry_after_the_new_refresh_token_was_used_revokes_the_family(auth, make_account, clock):
    account = make_account("user")
    first = login(auth, account)
    second = auth.refresh(first["refresh_token"])
    third = auth.refresh(second["refresh_token"])  # the client did get the answer

    with pytest.raises(UnauthorizedError, match="already used"):
        auth.refresh(first["refresh_token"])
    with pytest.raises(UnauthorizedError, match="revoked"):
        auth.refresh(third["refresh_token"])


def test_an_access_token_cannot_refresh(auth, make_account):
    pair = login(auth, make_account("device"))

    with pytest.raises(UnauthorizedError, match="access token cannot be used as a refresh token"):
        auth.refresh(pair["access_token"])


def test_a_refresh_token_unknown_to_the_database_is_refused(auth, make_account):
    pair = login(auth, make_account("device"))
    claims = auth.tokens.decode(pair["refresh_token"], "refresh")
    forged = auth.tokens.refresh_token(Principal(claims["sub"], claims["tenant"], "device"), "0" * 32)

    with pytest.raises(UnauthorizedError, match="unknown refresh token"):
        auth.refresh(forged)


# --- blocked and inactive accounts -----------------------------------------------------------------


def refusal(auth: AuthService, username: str, password: str, kind: str = "device") -> tuple:
    with pytest.raises(UnauthorizedError) as refused:
        auth.login(Credentials(username, password), kind, f"10.10.{uuid.uuid4().int % 250}.1")
    return refused.value.status, refused.value.to_body()


def test_unknown_wrong_blocked_and_inactive_answer_alike_and_all_run_the_kdf(auth, make_account, database, monkeypatch):
    wrong, blocked, inactive = make_account("device"), make_account("device"), make_account("device")
    with database.transaction() as cursor:
        accounts.set_blocked(cursor, blocked.username, True)
        accounts.set_active(cursor, inactive.username, False)
    hashed = []
    real_verify = auth_module.verify_password
    monkeypatch.setattr(auth_module, "verify_password", lambda pw, stored: hashed.append(1) or real_verify(pw, stored))

    answers = {
        "unknown": refusal(auth, f"nobody-{uuid.uuid4().hex}", "whatever"),
        "wrong password": refusal(auth, wrong.username, "whatever"),
        "blocked, right password": refusal(auth, blocked.username, blocked.password),
        "blocked, wrong password": refusal(auth, blocked.username, "whatever"),
        "inactive, right password": refusal(auth, inactive.username, inactive.password),
    }

    assert all(answer == answers["unknown"] for answer in answers.values()), answers
    assert answers["unknown"] == (401, {"error": "unauthorized", "message": "invalid username or password"})
    assert len(hashed) == len(answers)


def test_a_blocked_account_cannot_log_in_or_refresh_until_unblocked(auth, make_account, database):
    account = make_account("device")
    pair = login(auth, account)
    with database.transaction() as cursor:
        accounts.set_blocked(cursor, account.username, True)

    with pytest.raises(UnauthorizedError, match="invalid username or password"):
        login(auth, account)
    with pytest.raises(UnauthorizedError, match="revoked"):
        auth.refresh(pair["refresh_token"])

    with database.transaction() as cursor:
        accounts.set_blocked(cursor, account.username, False)
    assert login(auth, account)["access_token"]


def test_an_inactive_account_cannot_log_in(auth, make_account, database):
    account = make_account("user")
    with database.transaction() as cursor:
        cursor.execute("UPDATE accounts SET active = false WHERE id = %s", (account.account_id,))

    with pytest.raises(UnauthorizedError, match="invalid username or password"):
        login(auth, account)


def test_me_refuses_a_token_of_a_blocked_account_or_issued_before_a_change(auth, make_account, database):
    account = make_account("user")
    before = auth.tokens.verify_access(login(auth, account)["access_token"])
    with database.transaction() as cursor:
        accounts.set_blocked(cursor, account.username, True)
    with pytest.raises(UnauthorizedError, match="blocked, inactive or changed"):
        auth.me(before)

    with database.transaction() as cursor:
        accounts.set_blocked(cursor, account.username, False)
    after = auth.tokens.verify_access(login(auth, account)["access_token"])

    assert after.version == before.version + 2
    assert auth.me(after)["username"] == account.username
    with pytest.raises(UnauthorizedError):
        auth.me(before)  # unblocked, but the token predates both changes


def test_me_describes_the_account_and_its_tenant(auth, make_account):
    account = make_account("user", timezone="Europe/Lisbon")
    principal = auth.tokens.verify_access(login(auth, account)["access_token"])

    me = auth.me(principal)

    assert me["account_id"] == account.account_id and me["username"] == account.username and me["kind"] == "user"
    assert (me["tenant_id"], me["tenant_name"], me["timezone"]) == (
        account.tenant_id,
        account.tenant_name,
        "Europe/Lisbon",
    )


# --- the HTTP function -----------------------------------------------------------------------------


@pytest.fixture
def client(database_url, redis_url, token_settings, monkeypatch):
    # The auth function reads the database, Redis and the tokens' key, and nothing else it has to be given.
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("JWT_SECRET", token_settings.jwt_secret)
    monkeypatch.setenv("FRONT_PROXY_SECRET", FRONT_PROXY_SECRET)
    monkeypatch.setenv("REDIS_URL", redis_url)
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "S3_ENDPOINT_URL", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    return create_app(target="handle", source=str(MAIN)).test_client()


FRONT_PROXY_SECRET = "integration-test-front-proxy-secret-" + "p" * 16


def post(client, path: str, body=None, address: str = "10.2.0.1", **kwargs):
    """A request as the front proxy forwards it from a client at `address`."""
    headers = {"X-Real-IP": address, PROXY_SECRET_HEADER: FRONT_PROXY_SECRET}
    return client.post(path, json=body, headers=headers, **kwargs)


def test_http_device_login_answers_200_with_the_token_the_real_client_reads(client, make_account):
    account = make_account("device")

    response = post(client, "/api/v1/auth/device/login", {"username": account.username, "password": account.password})

    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["access_token"] and body["refresh_token"] and body["token_type"] == "bearer"


def test_http_user_login_refresh_and_me(client, make_account):
    account = make_account("user")
    pair = post(client, "/api/v1/auth/login", {"username": account.username, "password": account.password}).get_json()

    rotated = post(client, "/api/v1/auth/refresh", {"refresh_token": pair["refresh_token"]})
    retried = post(client, "/api/v1/auth/refresh", {"refresh_token": pair["refresh_token"]})
    again = post(client, "/api/v1/auth/refresh", {"refresh_token": rotated.get_json()["refresh_token"]})
    reused = post(client, "/api/v1/auth/refresh", {"refresh_token": pair["refresh_token"]})
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {rotated.get_json()['access_token']}"})

    assert rotated.status_code == 200 and retried.get_json() == rotated.get_json()  # a retry of a lost answer
    assert again.status_code == 200
    assert (reused.status_code, reused.get_json()["error"]) == (401, "unauthorized")  # its pair was used since
    assert me.status_code == 200
    assert me.get_json()["username"] == account.username and me.get_json()["timezone"] == "America/Sao_Paulo"


def test_http_a_user_at_the_device_route_is_401(client, make_account):
    account = make_account("user")

    response = post(client, "/api/v1/auth/device/login", {"username": account.username, "password": account.password})

    assert response.status_code == 401
    assert response.get_json() == {"error": "unauthorized", "message": "invalid username or password"}


def test_http_lockout_is_429_with_retry_after_for_that_address_only(client, make_account, login_settings):
    account = make_account("device")
    wrong = {"username": account.username, "password": "wrong"}
    right = {"username": account.username, "password": account.password}
    statuses = [
        post(client, "/api/v1/auth/device/login", wrong, "10.3.0.1").status_code
        for _ in range(login_settings.login_max_failures)
    ]

    locked = post(client, "/api/v1/auth/device/login", right, "10.3.0.1")
    elsewhere = post(client, "/api/v1/auth/device/login", right, "10.3.0.2")

    assert statuses == [401] * login_settings.login_max_failures
    assert locked.status_code == 429 and locked.get_json()["error"] == "rate_limited"
    assert 0 < int(locked.headers["Retry-After"]) <= login_settings.login_lockout_s
    assert elsewhere.status_code == 200


def test_http_unknown_wrong_and_blocked_answer_with_the_same_status_body_and_headers(client, make_account, database):
    wrong, blocked = make_account("device"), make_account("device")
    with database.transaction() as cursor:
        accounts.set_blocked(cursor, blocked.username, True)
    attempts = [
        {"username": f"nobody-{uuid.uuid4().hex}", "password": "x"},
        {"username": wrong.username, "password": "x"},
        {"username": blocked.username, "password": blocked.password},
    ]

    responses = [
        client.post(
            "/api/v1/auth/device/login",
            json=body,
            headers={"X-Real-IP": f"10.11.0.{number}", PROXY_SECRET_HEADER: FRONT_PROXY_SECRET, "X-Request-Id": "same"},
        )
        for number, body in enumerate(attempts)
    ]

    answers = {(r.status_code, r.get_data(), tuple(sorted(r.headers.items()))) for r in responses}
    assert len(answers) == 1
    assert responses[0].status_code == 401


def test_http_the_locked_answer_is_the_same_for_known_and_unknown_usernames(client, make_account, login_settings):
    known = make_account("device").username
    answers = []
    for username, address in ((known, "10.12.0.1"), (f"nobody-{uuid.uuid4().hex}", "10.12.0.2")):
        body = {"username": username, "password": "guess"}
        for _ in range(login_settings.login_max_failures):
            post(client, "/api/v1/auth/device/login", body, address)
        headers = {"X-Real-IP": address, PROXY_SECRET_HEADER: FRONT_PROXY_SECRET, "X-Request-Id": "same"}
        locked = client.post("/api/v1/auth/device/login", json=body, headers=headers)
        answers.append((locked.status_code, locked.get_data(), tuple(sorted(locked.headers.items()))))

    assert answers[0] == answers[1]
    assert answers[0][0] == 429


@pytest.mark.parametrize(
    "data, message",
    [
        (b"not json", "not valid JSON"),
        (b"", "body is empty"),
        (b"[1, 2]", "JSON object"),
        (b'{"password": "x"}', "username: required"),
        (b'{"username": "x", "password": 12}', "password: must be a string, not int"),
    ],
)
def test_http_bad_login_bodies_are_400_naming_the_problem(client, data, message):
    response = client.post("/api/v1/auth/device/login", data=data, content_type="application/json")

    assert response.status_code == 400
    assert message in response.get_json()["message"]


def test_http_refresh_without_a_token_is_400_naming_the_field(client):
    response = post(client, "/api/v1/auth/refresh", {"token": "x"})

    assert response.status_code == 400 and response.get_json()["field"] == "refresh_token"


@pytest.mark.parametrize(
    "headers, message",
    [
        ({}, "missing Authorization header"),
        ({"Authorization": "Token abc"}, "must be 'Bearer <access token>'"),
        ({"Authorization": "Bearer not.a.token"}, "not valid"),
    ],
)
def test_http_me_without_a_valid_bearer_token_is_401(client, headers, message):
    response = client.get("/api/v1/auth/me", headers=headers)

    assert response.status_code == 401
    assert message in response.get_json()["message"]


def test_http_wrong_method_is_405(client):
    assert client.get("/api/v1/auth/device/login").status_code == 405


# --- tenants and accounts (what `esm` does) ---------------------------------------------------------


def test_a_tenant_needs_an_iana_time_zone(database):
    with database.transaction() as cursor, pytest.raises(accounts.AccountError, match="not an IANA time zone"):
        accounts.create_tenant(cursor, f"it-{uuid.uuid4().hex}", "Mars/Olympus_Mons")


def test_creating_an_existing_account_if_missing_does_nothing_but_a_mismatch_is_an_error(database, make_account):
    account, other = make_account("device"), make_account("user")
    with database.transaction() as cursor:
        again = accounts.create_account(cursor, account.tenant_name, "device", account.username, "", if_missing=True)
        assert again == account.account_id
        with pytest.raises(accounts.AccountError, match="already exists"):
            accounts.create_account(cursor, account.tenant_name, "device", account.username, "pw")
        with pytest.raises(accounts.AccountError, match="as a device account of tenant"):
            accounts.create_account(cursor, other.tenant_name, "device", account.username, "pw", if_missing=True)


def test_esm_seed_demo_creates_the_demo_accounts_once(database_url, database, monkeypatch, auth):
    suffix = uuid.uuid4().hex[:10]
    names = {
        "DEMO_TENANT": f"it-demo-{suffix}",
        "DEMO_DEVICE_USER": f"it-demo-dev-{suffix}",
        "DEMO_DEVICE_PASSWORD": "dev-pass",
        "DEMO_ADMIN_USER": f"it-demo-adm-{suffix}",
        "DEMO_ADMIN_PASSWORD": "adm-pass",
    }
    monkeypatch.setenv("DATABASE_URL", database_url)
    for name, value in names.items():
        monkeypatch.setenv(name, value)
    try:
        cli.main(["seed-demo"])
        cli.main(["seed-demo"])

        device = auth.login(Credentials(names["DEMO_DEVICE_USER"], "dev-pass"), "device", "10.4.0.1")
        admin = auth.login(Credentials(names["DEMO_ADMIN_USER"], "adm-pass"), "user", "10.4.0.1")
        assert (
            auth.tokens.verify_access(device["access_token"]).tenant_id
            == auth.tokens.verify_access(admin["access_token"]).tenant_id
        )
    finally:
        with database.transaction() as cursor:
            cursor.execute(
                "DELETE FROM accounts WHERE username = ANY(%s)",
                ([names["DEMO_DEVICE_USER"], names["DEMO_ADMIN_USER"]],),
            )
            cursor.execute("DELETE FROM tenants WHERE name = %s", (names["DEMO_TENANT"],))


def test_esm_account_block_and_unblock(database_url, monkeypatch, auth, make_account, capsys):
    account = make_account("device")
    monkeypatch.setenv("DATABASE_URL", database_url)

    cli.main(["account", "block", account.username])
    with pytest.raises(UnauthorizedError):
        login(auth, account)
    cli.main(["account", "unblock", account.username])

    assert login(auth, account)["access_token"]
    assert f"account {account.username} unblocked" in capsys.readouterr().out
