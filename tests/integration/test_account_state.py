"""Immediate revocation, as an attacker holding a valid token would try it: a blocked, deactivated or changed account's
tokens are refused on their next request to ingest, analytics and auth `me`, with Redis up or down; and the pruning
of expired refresh tokens and old login failures. Through the functions as functions-framework serves them, in
process, with the real PostgreSQL, Redis, Kafka (a fresh topic nobody consumes) and object store."""

from __future__ import annotations

import gzip
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
import redis
from functions_framework import create_app
from support.claims import TEST_KEYRING
from support.clock import SetClock
from support.samples import recent_sample

from easysmart import accounts, cli
from easysmart.accountstate import AccountState, AccountStates, mirror_state, state_key
from easysmart.auth import AuthService, Credentials
from easysmart.config import AggregateSettings, LoginSettings, RateLimits, RetentionSettings, UploadLimits
from easysmart.errors import UnauthorizedError
from easysmart.identity import TokenService
from easysmart.ingest import IngestService
from easysmart.ratelimit import RateLimiter
from easysmart.retention import RetentionService

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"


@pytest.fixture
def auth(database, token_settings, redis_client) -> AuthService:
    return AuthService(
        database, TokenService(token_settings), LoginSettings(), states=AccountStates(database, redis_client)
    )


@pytest.fixture
def functions(database_url, redis_url, token_settings, new_topic, monkeypatch):
    """The test clients of ingest, analytics and auth, on the test database, signing key and a fresh raw topic."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("JWT_SECRET", token_settings.jwt_secret)
    monkeypatch.setenv("KAFKA_TOPIC_RAW", new_topic("it.accounts.raw"))
    return {
        name: create_app(target="handle", source=str(FUNCTIONS / name / "main.py")).test_client()
        for name in ("ingest", "analytics", "auth")
    }


def tokens_of(auth: AuthService, account) -> str:
    return auth.login(Credentials(account.username, account.password), account.kind, "10.20.0.1")["access_token"]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def upload(ingest, token: str):
    body = gzip.compress(orjson.dumps(recent_sample("ha-bulk-small.json")))
    return ingest.post(
        "/api/v1/telemetry/bulk",
        data=body,
        headers={**bearer(token), "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )


def test_esm_account_block_refuses_the_next_upload_analytics_request_and_me(
    functions, auth, make_account, database_url, monkeypatch
):
    device, user = make_account("device"), make_account("user")
    device_token, user_token = tokens_of(auth, device), tokens_of(auth, user)
    accepted = upload(functions["ingest"], device_token)
    batch_path = accepted.headers["Location"]
    assert accepted.status_code == 201, accepted.get_data(as_text=True)
    assert functions["analytics"].get("/api/v1/analytics/equipments", headers=bearer(user_token)).status_code == 200
    monkeypatch.setenv("DATABASE_URL", database_url)

    cli.main(["account", "block", device.username])
    cli.main(["account", "block", user.username])

    refused = [
        upload(functions["ingest"], device_token),
        functions["ingest"].get(batch_path, headers=bearer(device_token)),
        functions["analytics"].get("/api/v1/analytics/equipments", headers=bearer(user_token)),
        functions["auth"].get("/api/v1/auth/me", headers=bearer(device_token)),
        functions["auth"].get("/api/v1/auth/me", headers=bearer(user_token)),
    ]
    assert [response.status_code for response in refused] == [401] * 5
    assert {response.get_json()["error"] for response in refused} == {"unauthorized"}


def test_a_token_issued_before_a_password_change_is_refused_and_a_new_one_admitted(
    functions, auth, make_account, database, redis_client
):
    device = make_account("device")
    before = tokens_of(auth, device)
    with database.transaction() as cursor:
        state = accounts.set_password(cursor, device.username, "a-new-password")
    mirror_state(redis_client, state)
    device.password = "a-new-password"

    assert upload(functions["ingest"], before).status_code == 401
    assert upload(functions["ingest"], tokens_of(auth, device)).status_code == 201


def test_deactivation_refuses_the_next_request_and_revokes_every_refresh_token(auth, make_account, database):
    user = make_account("user")
    pair = auth.login(Credentials(user.username, user.password), "user", "10.20.0.2")
    principal = auth.tokens.verify_access(pair["access_token"])
    states = AccountStates(database, None)  # no Redis at all: the database is asked
    states.check(principal)

    with database.transaction() as cursor:
        accounts.set_active(cursor, user.username, False)

    with pytest.raises(UnauthorizedError, match="blocked, inactive or changed"):
        AccountStates(database, None).check(principal)
    with pytest.raises(UnauthorizedError, match="revoked"):
        auth.refresh(pair["refresh_token"])


def closed_redis() -> redis.Redis:
    """A client of a port nothing listens on: Redis is down."""
    return redis.Redis(host="127.0.0.1", port=1, socket_timeout=1, socket_connect_timeout=1)


def test_redis_down_ingest_asks_the_database_and_still_refuses_a_blocked_device(auth, make_account, database):
    blocked, other = make_account("device"), make_account("device")
    blocked_principal = auth.tokens.verify_access(tokens_of(auth, blocked))
    other_principal = auth.tokens.verify_access(tokens_of(auth, other))
    with database.transaction() as cursor:
        accounts.set_blocked(cursor, blocked.username, True)  # Redis cannot be told
    limiter = RateLimiter(closed_redis())
    ingest = IngestService(
        UploadLimits(),
        RateLimits(),
        RetentionSettings(),
        database,
        blobs=None,
        publisher=None,
        limiter=limiter,
        keyring=TEST_KEYRING,
    )

    with pytest.raises(UnauthorizedError):
        ingest.rate_limit(blocked_principal, "10.20.0.3")
    assert ingest.rate_limit(other_principal, "10.20.0.3") == {}  # admitted; the rate limit is skipped


def test_redis_down_a_database_answer_is_kept_at_most_5_s(auth, make_account, database):
    device = make_account("device")
    principal = auth.tokens.verify_access(tokens_of(auth, device))
    clock = SetClock()
    states = AccountStates(database, closed_redis(), monotonic=clock.monotonic)
    states.check(principal)
    with database.transaction() as cursor:
        accounts.set_blocked(cursor, device.username, True)

    clock.advance(4.9)
    states.check(principal)  # still the answer read 4.9 s ago
    clock.advance(0.1)
    with pytest.raises(UnauthorizedError):
        states.check(principal)


def test_a_copy_read_before_a_change_cannot_overwrite_the_change_in_redis(redis_client):
    account_id = str(uuid.uuid4())
    try:
        assert mirror_state(redis_client, AccountState(account_id, 3, active=True, blocked=True))

        mirror_state(redis_client, AccountState(account_id, 2, active=True, blocked=False))  # a late, stale writer

        assert AccountState.from_fields(account_id, redis_client.hgetall(state_key(account_id))).blocked
    finally:
        redis_client.delete(state_key(account_id))


def test_a_missing_copy_is_read_from_the_database_and_written_to_redis(auth, make_account, database, redis_client):
    device = make_account("device")
    principal = auth.tokens.verify_access(tokens_of(auth, device))
    redis_client.delete(state_key(device.account_id))

    AccountStates(database, redis_client).check(principal)

    copy = AccountState.from_fields(device.account_id, redis_client.hgetall(state_key(device.account_id)))
    assert copy == AccountState(device.account_id, 1, active=True, blocked=False)


# --- pruning ---------------------------------------------------------------------------------------


def test_retention_prunes_expired_refresh_tokens_and_login_failures_older_than_the_lockout_only(database, make_account):
    account = make_account("device")
    now = datetime.now(timezone.utc)
    lockout = LoginSettings().login_lockout_s
    tokens = {"expired": uuid.uuid4(), "valid": uuid.uuid4()}
    names = {name: f"it-prune-{name}-{uuid.uuid4().hex}" for name in ("old", "recent", "old but locked")}
    with database.transaction() as cursor:
        for name, expires in (("expired", now - timedelta(seconds=1)), ("valid", now + timedelta(hours=1))):
            cursor.execute(
                "INSERT INTO refresh_tokens (jti, account_id, family_id, expires_at) VALUES (%s, %s, %s, %s)",
                (tokens[name], account.account_id, uuid.uuid4(), expires),
            )
        for name, updated, locked_until in (
            ("old", now - timedelta(seconds=lockout + 1), None),
            ("recent", now - timedelta(seconds=lockout - 60), now + timedelta(seconds=60)),
            ("old but locked", now - timedelta(seconds=lockout + 1), now + timedelta(seconds=60)),
        ):
            cursor.execute(
                "INSERT INTO login_failures (username, client_addr, failures, locked_until, updated_at)"
                " VALUES (%s, '10.30.0.1', 5, %s, %s)",
                (names[name], locked_until, updated),
            )

    report = RetentionService(RetentionSettings(), AggregateSettings(), database, blobs=None).run("expire", now=now)

    assert report["expire"]["refresh_tokens_pruned"] >= 1 and report["expire"]["login_failures_pruned"] >= 1
    with database.transaction() as cursor:
        cursor.execute("SELECT jti FROM refresh_tokens WHERE jti = ANY(%s)", (list(tokens.values()),))
        assert [row[0] for row in cursor.fetchall()] == [tokens["valid"]]
        cursor.execute("SELECT username FROM login_failures WHERE username = ANY(%s)", (list(names.values()),))
        assert sorted(row[0] for row in cursor.fetchall()) == sorted([names["recent"], names["old but locked"]])
        cursor.execute("DELETE FROM login_failures WHERE username = ANY(%s)", (list(names.values()),))
