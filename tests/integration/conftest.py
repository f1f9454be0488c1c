"""Fixtures for integration tests: the real PostgreSQL at DATABASE_URL, migrated, and throwaway tenants."""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pytest
import redis

from easysmart import accounts
from easysmart.config import Settings
from easysmart.db import Database, migrate
from easysmart.storage import BlobStore, make_s3_client


@pytest.fixture(scope="session")
def database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        pytest.skip("DATABASE_URL is not set: integration tests need the real PostgreSQL (make up, or make test)")
    migrate(url, os.environ.get("DB_MODE", "auto"))
    return url


@pytest.fixture(scope="session")
def database(database_url: str):
    db = Database(database_url, max_connections=8)
    yield db
    db.close()


@dataclass
class AuthTenant:
    """A tenant of its own with one device and one user account (and their passwords)."""

    name: str
    tenant_id: str
    device: str
    device_password: str
    device_id: str
    user: str
    user_password: str
    user_id: str


@pytest.fixture
def auth_tenant(database: Database):
    suffix = uuid.uuid4().hex[:12]
    names = {"tenant": f"it-auth-{suffix}", "device": f"it-dev-{suffix}", "user": f"it-usr-{suffix}"}
    with database.transaction() as cursor:
        tenant_id = accounts.create_tenant(cursor, names["tenant"], "America/Sao_Paulo")
        device_id = accounts.create_account(cursor, names["tenant"], "device", names["device"], f"pw-{suffix}-d")
        user_id = accounts.create_account(cursor, names["tenant"], "user", names["user"], f"pw-{suffix}-u")
    yield AuthTenant(names["tenant"], tenant_id, names["device"], f"pw-{suffix}-d", device_id,
                     names["user"], f"pw-{suffix}-u", user_id)
    with database.transaction() as cursor:
        # Login failures and refresh tokens go with the accounts (ON DELETE CASCADE).
        cursor.execute("DELETE FROM accounts WHERE tenant_id = %s", (tenant_id,))
        cursor.execute("DELETE FROM tenants WHERE id = %s", (tenant_id,))


def test_settings(database_url: str, **overrides) -> Settings:
    """Settings for the auth service under test: the real database, a test signing key."""
    return Settings(database_url=database_url, redis_url="redis://unused", kafka_bootstrap_servers="unused:9092",
                    s3_endpoint_url="http://unused", s3_access_key_id="unused", s3_secret_access_key="unused",
                    jwt_secret="integration-test-secret-" + "k" * 40, **overrides)


# --- Fixtures for the pipeline components (process, rate limits, Kafka, object store) ---


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def blobs(settings: Settings) -> BlobStore:
    return BlobStore(make_s3_client(settings), settings.s3_bucket)


@pytest.fixture
def redis_client(settings: Settings):
    client = redis.Redis.from_url(settings.redis_url)
    yield client
    client.close()


@dataclass
class TenantAccount:
    tenant_name: str
    tenant_id: str
    username: str
    password: str
    account_id: str


@pytest.fixture
def make_account(database: Database):
    def make(kind: str = "device", timezone: str = "America/Sao_Paulo") -> TenantAccount:
        suffix = uuid.uuid4().hex[:10]
        with database.transaction() as cursor:
            tenant_id = accounts.create_tenant(cursor, f"it-{suffix}", timezone)
            account_id = accounts.create_account(cursor, f"it-{suffix}", kind, f"it-{kind}-{suffix}", f"pw-{suffix}")
        return TenantAccount(f"it-{suffix}", tenant_id, f"it-{kind}-{suffix}", f"pw-{suffix}", account_id)
    return make
