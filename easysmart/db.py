"""PostgreSQL access: a connection pool, transactions that map outages to 503, prepared statements, migrations."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from importlib import resources
from typing import Any, Iterator

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from easysmart.clock import MonotonicClock
from easysmart.errors import DatabaseTimeoutError, UnavailableError

logger = logging.getLogger(__name__)

psycopg2.extras.register_uuid()
_MIGRATION_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+?)(?:\.(?P<mode>postgres|timescaledb))?\.sql$")
MODES = ("postgres", "timescaledb")


# A connection idle for longer than this is checked before use: after a database restart,
# every pooled connection is dead, and each would otherwise fail one request.
_TRUST_IDLE_S = 1.0


# SQLSTATEs of a server that is going away or cannot take more work now: retrying later helps.
_OUTAGE_CODES = {"57P01", "57P02", "57P03"}  # admin_shutdown, crash_shutdown, cannot_connect_now
_OUTAGE_CLASSES = {"08", "53"}  # connection exceptions; insufficient resources (too many connections, disk full)
_TIMEOUT_CODES = {"57014", "55P03"}  # query_canceled (statement_timeout), lock_not_available (lock_timeout)


def is_outage(error: BaseException) -> bool:
    """True when the database (not the statement) failed: the connection was lost or refused, or the server
    is shutting down or out of resources. Data exceptions, program limits and integrity violations are not."""
    if isinstance(error, psycopg2.InterfaceError):
        return True
    if not isinstance(error, psycopg2.OperationalError):
        return False
    code = error.pgcode
    # No SQLSTATE: the client library lost or could not open the connection.
    return code is None or code in _OUTAGE_CODES or code[:2] in _OUTAGE_CLASSES


def _translated(error: psycopg2.Error) -> BaseException:
    if is_outage(error):
        return UnavailableError("the database is unavailable", retry_after_s=5)
    if error.pgcode in _TIMEOUT_CODES:
        return DatabaseTimeoutError("the database did not answer in time", retry_after_s=5)
    return error


def one_row(cursor: psycopg2.extensions.cursor) -> tuple:
    """The row of a statement that always returns one (an aggregate, INSERT ... RETURNING, a row just locked)."""
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError("the statement returned no row")
    return row


def dict_rows(cursor: psycopg2.extensions.cursor) -> list[dict]:
    """The rows of the last query, each as {column name: value}."""
    names = [column.name for column in cursor.description or ()]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _alive(conn: psycopg2.extensions.connection) -> bool:
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
        conn.rollback()
        return True
    except (psycopg2.OperationalError, psycopg2.InterfaceError):
        return False


_PARAMETER = re.compile(r"%\((\w+)\)s")
# A name is a connection's handle on its statement: two statements under one name would run each other's.
_PREPARED_NAMES: dict[str, str] = {}


class PreparedStatement:
    """A statement the server parses and plans once per pooled connection (PREPARE), then only executes.

    Under the small-batch load, parsing and planning the hot statements of process and alerts cost PostgreSQL more
    than running them (0.1-0.3 ms each against tens of microseconds). Written like any statement, with %(name)s
    parameters, each given its SQL type. Name columns rather than `*`: a prepared statement whose result columns
    change under it (a migration adding one) fails until its connection is closed."""

    def __init__(self, name: str, text: str, /, **types: str) -> None:
        names = list(dict.fromkeys(_PARAMETER.findall(text)))
        if set(names) != set(types):
            raise ValueError(f"{name}: parameters {sorted(names)} but types for {sorted(types)}")
        if _PREPARED_NAMES.setdefault(name, text) != text:
            raise ValueError(f"another statement is prepared as {name}")
        position = {parameter: index for index, parameter in enumerate(names, start=1)}
        body = _PARAMETER.sub(lambda match: f"${position[match[1]]}", text).replace("%%", "%")
        self.name = name
        self.text = text
        declared = f" ({', '.join(types[parameter] for parameter in names)})" if names else ""
        # Each argument cast as declared: psycopg2 writes an array of only NULLs as ARRAY[NULL], text[] otherwise.
        arguments = f" ({', '.join(f'%({parameter})s::{types[parameter]}' for parameter in names)})" if names else ""
        self.definition = f"PREPARE {name}{declared} AS {body}"
        self.call = f"EXECUTE {name}{arguments}"


class _PoolConnection(psycopg2.extensions.connection):
    """A pooled connection, which knows the statements it has prepared (they last as long as the session,
    whatever its transactions do)."""

    def __init__(self, dsn: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(dsn, *args, **kwargs)
        self.prepared: set[str] = set()


def prepared(cursor: psycopg2.extensions.cursor, *statements: PreparedStatement) -> str:
    """The SQL that runs the statements one after another, in one round trip: EXECUTEs on a pooled connection,
    after preparing those it has not yet (one more round trip, once per connection); their own text on any other."""
    known = getattr(cursor.connection, "prepared", None)
    if known is None:
        return "; ".join(statement.text for statement in statements)
    missing = [statement for statement in statements if statement.name not in known]
    if missing:
        # On a cursor of its own: the caller's may only queue statements (process's DeferredStatements).
        with cursor.connection.cursor() as preparing:
            preparing.execute("; ".join(statement.definition for statement in missing))
        known.update(statement.name for statement in missing)
    return "; ".join(statement.call for statement in statements)


class Database:
    """A thread-safe pool that keeps up to `max_connections` open and opens them lazily.

    (psycopg2's own pools close every returned connection above `minconn`, so a lazy pool
    of theirs would connect anew for each transaction.) A broken connection is discarded.
    `monotonic` measures how long a connection has been idle. Every connection starts with the given
    statement_timeout and lock_timeout (None: the server's; given, they replace any `options` of the DSN),
    which a transaction may still change with SET LOCAL.
    """

    def __init__(
        self,
        dsn: str,
        max_connections: int = 16,
        connect_timeout_s: int = 5,
        monotonic: MonotonicClock = time.monotonic,
        statement_timeout_s: float | None = None,
        lock_timeout_s: float | None = None,
        cursor_factory: type[psycopg2.extensions.cursor] | None = None,
    ) -> None:
        self.dsn = dsn
        self.cursor_factory = cursor_factory  # of every cursor of the pool's connections (None: psycopg2's)
        self.connect_timeout_s = connect_timeout_s
        self.options = " ".join(
            f"-c {name}={round(seconds * 1000)}"
            for name, seconds in (("statement_timeout", statement_timeout_s), ("lock_timeout", lock_timeout_s))
            if seconds is not None
        )
        self.monotonic = monotonic
        self._idle: list[tuple[psycopg2.extensions.connection, float]] = []  # (connection, idle since)
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()

    def _checkout(self) -> psycopg2.extensions.connection:
        while True:
            with self._lock:
                if not self._idle:
                    break
                conn, idle_since = self._idle.pop()
            if self.monotonic() - idle_since < _TRUST_IDLE_S or _alive(conn):
                return conn
            conn.close()  # the server went away (a restart) while it was idle
        settings = {"options": self.options} if self.options else {}
        conn = psycopg2.connect(
            self.dsn,
            connect_timeout=self.connect_timeout_s,
            connection_factory=_PoolConnection,
            cursor_factory=self.cursor_factory,
            **settings,
        )
        try:
            with conn.cursor() as cursor:
                # The prepared statements are keyed lookups, whose generic plan is what a custom plan would be; but
                # PostgreSQL prices an array parameter's generic plan dearer and would plan them anew every time.
                cursor.execute("SET plan_cache_mode = force_generic_plan")
            conn.commit()
        except psycopg2.Error:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        self._slots.acquire()
        try:
            try:
                conn = self._checkout()
            except psycopg2.OperationalError as error:
                raise UnavailableError("the database is unavailable", retry_after_s=5) from error
            broken = False
            try:
                yield conn
            except psycopg2.Error as error:
                broken = is_outage(error)
                translated = _translated(error)
                if translated is error:
                    raise
                raise translated from error
            finally:
                if conn.closed:
                    broken = True
                elif not broken and conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                    try:
                        conn.rollback()
                    except psycopg2.Error:
                        broken = True
                if broken:
                    conn.close()
                else:
                    with self._lock:
                        self._idle.append((conn, self.monotonic()))
        finally:
            self._slots.release()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg2.extensions.cursor]:
        """One transaction: committed when the block ends, rolled back on any error."""
        with self.connection() as conn:
            try:
                with conn.cursor() as cursor:
                    yield cursor
                conn.commit()
            except BaseException:
                if not conn.closed:
                    conn.rollback()
                raise

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()


def detect_mode(cursor: psycopg2.extensions.cursor, configured: str) -> str:
    """'timescaledb' when forced or when the extension is available; else 'postgres'."""
    if configured in MODES:
        return configured
    if configured != "auto":
        raise ValueError(f"DB_MODE must be auto, postgres or timescaledb, not {configured!r}")
    cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    return "timescaledb" if cursor.fetchone() else "postgres"


def migrations_for(mode: str) -> list[tuple[str, str, str]]:
    """(version, file name, sql) for every migration that applies to this mode, in order."""
    found = []
    for entry in resources.files("easysmart.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match and match["mode"] in (None, mode):
            found.append((match["version"], entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [version for version, _, _ in found]
    duplicated = {v for v in versions if versions.count(v) > 1}
    if duplicated:
        raise RuntimeError(f"two migrations share version(s) {sorted(duplicated)} for mode {mode}")
    return found


def migrate(dsn: str, configured_mode: str = "auto") -> tuple[str, list[str]]:
    """Apply pending migrations in order, each in its own transaction. Returns (mode, applied)."""
    conn = psycopg2.connect(dsn, connect_timeout=10)
    applied: list[str] = []
    try:
        with conn.cursor() as cursor:
            # One migrator at a time, whoever else starts.
            cursor.execute("SELECT pg_advisory_lock(hashtext('esm_migrations'))")
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, name text NOT NULL, mode text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.commit()
            cursor.execute("SELECT mode FROM schema_migrations ORDER BY version LIMIT 1")
            row = cursor.fetchone()
            mode = row[0] if row else detect_mode(cursor, configured_mode)
            if row and configured_mode in MODES and configured_mode != mode:
                raise RuntimeError(
                    f"the database was migrated in {mode} mode; DB_MODE={configured_mode} cannot change it"
                )
            cursor.execute("SELECT version FROM schema_migrations")
            done = {version for (version,) in cursor.fetchall()}
            conn.commit()
            for version, name, sql in migrations_for(mode):
                if version in done:
                    continue
                logger.info("applying migration %s", name)
                cursor.execute(sql)
                cursor.execute(
                    "INSERT INTO schema_migrations (version, name, mode) VALUES (%s, %s, %s)", (version, name, mode)
                )
                conn.commit()
                applied.append(name)
            cursor.execute("SELECT pg_advisory_unlock(hashtext('esm_migrations'))")
            conn.commit()
        return mode, applied
    finally:
        conn.close()
