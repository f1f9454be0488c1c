"""Fixtures for integration tests: the real services of the local stack, migrated, and throwaway tenants.

Every test makes its own tenant (unique name), so tests never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import psycopg2
import psycopg2.extensions
import pytest

from easysmart import accounts
from easysmart.config import (
    ConfigError,
    G,
    KafkaSettings,
    LoginSettings,
    ObjectStoreSettings,
    RedisSettings,
    TokenSettings,
)
from easysmart.db import Database, migrate

TEST_JWT_SECRET = "integration-test-secret-" + "k" * 40


@pytest.fixture(scope="session")
def database_url():
    """A database of this test session on the stack's PostgreSQL, migrated, dropped at the end.

    Not the stack's own database: the running stack's always-on workers (the outbox relay, the alerts and
    notify ticks, retention) would otherwise act on the tests' rows while the tests look at them."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        pytest.skip("DATABASE_URL is not set: integration tests need the real PostgreSQL (make test sets it)")
    name = f"esm_it_{uuid.uuid4().hex[:12]}"
    _administer(url, f"CREATE DATABASE {name}")
    session_url = psycopg2.extensions.make_dsn(url, dbname=name)
    try:
        migrate(session_url, os.environ.get("DB_MODE", "auto"))
        yield session_url
    finally:
        _administer(url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _administer(url: str, statement: str) -> None:
    """CREATE/DROP DATABASE, which cannot run inside a transaction."""
    conn = psycopg2.connect(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(statement)
    finally:
        conn.close()


def local_stack(group: type[G]) -> G:
    """A settings group of the local stack, read from the environment (skips when it is incomplete)."""
    try:
        return group.from_env()
    except ConfigError as error:
        pytest.skip(f"the local stack's configuration is incomplete ({error}); run through make test")


@pytest.fixture(scope="session")
def kafka_settings() -> KafkaSettings:
    return local_stack(KafkaSettings)


@pytest.fixture(scope="session")
def token_settings() -> TokenSettings:
    """A test signing key; the other token settings are the defaults."""
    return TokenSettings(jwt_secret=TEST_JWT_SECRET)


@pytest.fixture(scope="session")
def login_settings() -> LoginSettings:
    return LoginSettings()


@pytest.fixture(scope="session")
def database(database_url: str):
    db = Database(database_url, max_connections=8)
    yield db
    db.close()


@pytest.fixture(scope="session")
def blobs(database_url: str):
    from easysmart.storage import make_blob_store

    return make_blob_store(local_stack(ObjectStoreSettings), timeout_s=5)


@pytest.fixture(scope="session")
def s3_client(database_url: str):
    """boto3's client of the local object store: what lists and configures the bucket (retention) uses."""
    from easysmart.storage import make_s3_client

    return make_s3_client(local_stack(ObjectStoreSettings), timeout_s=5)


@pytest.fixture(scope="session")
def redis_url(database_url: str) -> str:
    return local_stack(RedisSettings).redis_url


@pytest.fixture(scope="session")
def redis_client(redis_url: str):
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    yield client
    client.close()


@dataclass
class Account:
    username: str
    password: str
    account_id: str
    tenant_id: str
    tenant_name: str
    kind: str


@pytest.fixture
def make_account(database: Database):
    """make_account(kind="device") -> Account, each in a fresh tenant of its own (removed afterwards when
    nothing else refers to it)."""
    tenants: list[str] = []

    def make(kind: str = "device", timezone: str = "America/Sao_Paulo") -> Account:
        suffix = uuid.uuid4().hex[:12]
        tenant, username, password = f"it-{suffix}", f"it-{kind}-{suffix}", f"pw-{suffix}"
        with database.transaction() as cursor:
            tenant_id = accounts.create_tenant(cursor, tenant, timezone)
            account_id = accounts.create_account(cursor, tenant, kind, username, password)
        tenants.append(tenant_id)
        return Account(username, password, account_id, tenant_id, tenant, kind)

    yield make
    for tenant_id in tenants:
        try:
            with database.transaction() as cursor:
                # Login failures, refresh and set-password tokens go with the accounts (ON DELETE CASCADE).
                cursor.execute("DELETE FROM audit_log WHERE tenant_id = %s", (tenant_id,))
                cursor.execute("DELETE FROM accounts WHERE tenant_id = %s", (tenant_id,))
                cursor.execute("DELETE FROM tenants WHERE id = %s", (tenant_id,))
        except psycopg2.IntegrityError:
            pass  # stored telemetry or batches still refer to it: a unique tenant nobody else sees


@pytest.fixture
def new_topic(kafka_settings: KafkaSettings):
    """new_topic(prefix, partitions=1, configs=None) -> the name of a fresh Kafka topic (with those topic configs,
    e.g. {"max.message.bytes": "1024"}), deleted afterwards."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=kafka_settings.kafka_bootstrap_servers.split(","))
    topics: list[str] = []

    def make(prefix: str, partitions: int = 1, configs: dict[str, str] | None = None) -> str:
        name = f"{prefix}.{uuid.uuid4().hex[:8]}"
        admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs or {})])
        topics.append(name)
        return name

    yield make
    if topics:
        admin.delete_topics(topics)
    admin.close()
