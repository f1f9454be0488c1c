"""The connection pool against the real PostgreSQL: a connection that died while idle is not handed out."""

from __future__ import annotations

import pytest
from support.clock import SetClock

from easysmart.db import Database
from easysmart.errors import UnavailableError


@pytest.fixture
def clock() -> SetClock:
    return SetClock()


@pytest.fixture
def pool(database, clock):
    pool = Database(database.dsn, 2, monotonic=clock.monotonic)
    yield pool
    pool.close()


def backend_pid(pool: Database) -> int:
    with pool.transaction() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def terminate(database: Database, pid: int) -> None:
    """What a database restart does to an idle pooled connection (waiting until the backend has gone)."""
    with database.transaction() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
        assert cursor.fetchone()[0], f"backend {pid} still running after 10 s"


def test_pooled_connections_survive_a_database_restart(pool, database, clock):
    first_pid = backend_pid(pool)
    terminate(database, first_pid)

    clock.advance(1.2)

    assert backend_pid(pool) != first_pid


def test_a_connection_idle_for_under_a_second_is_used_unchecked_and_discarded_when_dead(pool, database, clock):
    first_pid = backend_pid(pool)
    terminate(database, first_pid)

    clock.advance(0.5)

    with pytest.raises(UnavailableError):
        backend_pid(pool)
    assert backend_pid(pool) != first_pid
