"""Statement and lock timeouts of the functions' pools against the real PostgreSQL: each pool's connections have
their function's timeouts, and a query past analytics' statement timeout answers 503 with Retry-After, never 500."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest
from functions_framework import create_app

from easysmart.accountstate import AccountStates
from easysmart.analytics import AnalyticsService
from easysmart.config import AggregateSettings
from easysmart.db import Database
from easysmart.identity import Principal, TokenService

ANALYTICS_MAIN = Path(__file__).resolve().parents[2] / "functions" / "analytics" / "main.py"


def shown(db: Database, setting: str) -> str:
    with db.transaction() as cursor:
        cursor.execute(f"SHOW {setting}")
        return cursor.fetchone()[0]


def test_every_pooled_connection_starts_with_the_pool_s_timeouts(database):
    pool = Database(database.dsn, 2, statement_timeout_s=5, lock_timeout_s=2)
    try:
        with pool.connection() as first, pool.connection() as second:
            for conn in (first, second):
                with conn.cursor() as cursor:
                    cursor.execute("SELECT current_setting('statement_timeout'), current_setting('lock_timeout')")
                    assert cursor.fetchone() == ("5s", "2s")
                conn.rollback()
        with pool.transaction() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '1s'")  # a transaction's own setting ends with it

        assert (shown(pool, "statement_timeout"), shown(pool, "lock_timeout")) == ("5s", "2s")
    finally:
        pool.close()


@pytest.fixture
def analytics(database_url, token_settings, monkeypatch):
    """(the analytics function's module, a test client of it), with a 50 ms statement timeout configured."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("JWT_SECRET", token_settings.jwt_secret)
    monkeypatch.setenv("ANALYTICS_DB_STATEMENT_TIMEOUT_S", "0.05")
    monkeypatch.setenv("ANALYTICS_DB_LOCK_TIMEOUT_S", "0.5")
    client = create_app(target="handle", source=str(ANALYTICS_MAIN)).test_client()
    return sys.modules["main"], client


def test_the_analytics_function_s_pool_has_its_configured_timeouts(analytics):
    module, _ = analytics

    service, _, _ = module._clients()

    try:
        assert (shown(service.db, "statement_timeout"), shown(service.db, "lock_timeout")) == ("50ms", "500ms")
    finally:
        service.db.close()


class SlowDatabase(Database):
    """A database whose every transaction first runs a query slower than any statement timeout of the test."""

    @contextlib.contextmanager
    def transaction(self):
        with super().transaction() as cursor:
            cursor.execute("SELECT pg_sleep(2)")
            yield cursor


def test_an_analytics_query_past_its_statement_timeout_answers_503_with_retry_after(
    analytics, database_url, token_settings, make_account, monkeypatch
):
    module, client = analytics
    account = make_account("user")
    tokens = TokenService(token_settings)
    slow, accounts_db = SlowDatabase(database_url, 1, statement_timeout_s=0.05), Database(database_url, 1)
    states = AccountStates(accounts_db, None)  # the account's state is read in time; the query is what is slow
    monkeypatch.setattr(module, "_clients", lambda: (AnalyticsService(slow, AggregateSettings()), tokens, states))
    token = tokens.access_token(Principal(account.account_id, account.tenant_id, "user", account.username))

    try:
        response = client.get("/api/v1/analytics/equipments", headers={"Authorization": f"Bearer {token}"})
    finally:
        slow.close()
        accounts_db.close()

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.get_json()["error"] == "database_timeout"
