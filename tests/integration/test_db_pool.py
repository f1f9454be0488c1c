"""The connection pool against the real PostgreSQL: a connection that died while idle is not handed out; a
prepared statement is prepared once per pooled connection, whatever its transactions do."""

from __future__ import annotations

import psycopg2
import pytest
from support.clock import SetClock

from easysmart.db import Database, PreparedStatement, prepared
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


DOUBLED = PreparedStatement("test_pool_doubled", "SELECT %(n)s * 2, %(label)s || '%%'", n="integer", label="text")
TRIPLED = PreparedStatement("test_pool_tripled", "SELECT %(n)s * 3", n="integer")
CONSTANT = PreparedStatement("test_pool_constant", "SELECT 42")


def run_prepared(pool: Database, *statements: PreparedStatement) -> tuple:
    with pool.transaction() as cursor:
        cursor.execute(prepared(cursor, *statements), {"n": 7, "label": "x"})
        row = cursor.fetchone()
        cursor.execute("SELECT array_agg(name::text ORDER BY name) FROM pg_prepared_statements")
        return row, cursor.fetchone()[0]


def test_a_pooled_connection_prepares_a_statement_once_and_keeps_it_past_a_rollback(pool):
    assert run_prepared(pool, DOUBLED) == ((14, "x%"), ["test_pool_doubled"])
    with pytest.raises(psycopg2.errors.DivisionByZero):
        with pool.transaction() as cursor:
            cursor.execute(prepared(cursor, TRIPLED), {"n": 1})
            cursor.execute("SELECT 1 / 0")

    # Both still prepared on the same connection: executed, not prepared again (PREPARE would fail on a name
    # that exists).
    assert run_prepared(pool, DOUBLED, TRIPLED) == ((21,), ["test_pool_doubled", "test_pool_tripled"])
    assert run_prepared(pool, CONSTANT)[0] == (42,)


def test_a_connection_the_pool_replaced_prepares_again(pool, database, clock):
    run_prepared(pool, DOUBLED)
    terminate(database, backend_pid(pool))
    clock.advance(1.2)

    assert run_prepared(pool, DOUBLED) == ((14, "x%"), ["test_pool_doubled"])


def test_a_connection_of_its_own_runs_the_statements_text(database):
    conn = psycopg2.connect(database.dsn)
    try:
        with conn.cursor() as cursor:
            cursor.execute(prepared(cursor, TRIPLED, DOUBLED), {"n": 5, "label": "y"})
            assert cursor.fetchone() == (10, "y%")
            cursor.execute("SELECT count(*) FROM pg_prepared_statements")
            assert cursor.fetchone()[0] == 0
    finally:
        conn.close()


def test_pooled_connections_plan_prepared_statements_once(pool):
    with pool.transaction() as cursor:
        cursor.execute("SHOW plan_cache_mode")
        assert cursor.fetchone()[0] == "force_generic_plan"
