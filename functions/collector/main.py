"""collector: GET /metrics serves the object store's, the database's and the watched filesystems' figures.

Always on (min-scale 1, one worker): its threads read each source on a schedule into a snapshot, and a scrape
renders the snapshot (easysmart.collector).
"""

from __future__ import annotations

import functools
import threading

import flask
import functions_framework
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from easysmart.collector import (
    Collector,
    DatabaseSource,
    FilesystemSource,
    ObjectStoreSource,
    exposition_registry,
    watch_paths,
)
from easysmart.config import (
    BackendSettings,
    CollectorDatabaseTimeouts,
    CollectorSettings,
    DatabaseSettings,
    LoggingSettings,
    ObjectStoreSettings,
)
from easysmart.db import Database
from easysmart.observability import configure_logging
from easysmart.storage import make_s3_client
from easysmart.web import Router

configure_logging("collector", LoggingSettings.from_env())


@functools.cache
def _collector() -> Collector:
    settings, database, store = (
        CollectorSettings.from_env(),
        DatabaseSettings.from_env(),
        ObjectStoreSettings.from_env(),
    )
    timeouts = CollectorDatabaseTimeouts.from_env()
    # One source thread reads the database at a time: one connection is enough.
    db = Database(
        database.database_url,
        max_connections=1,
        statement_timeout_s=timeouts.statement_timeout_s,
        lock_timeout_s=timeouts.lock_timeout_s,
    )
    s3 = make_s3_client(store, BackendSettings.from_env().backend_timeout_s)
    collector = Collector(
        [
            ObjectStoreSource(s3, store.s3_bucket, settings.object_store_refresh_s),
            DatabaseSource(db, settings.stuck_after_s, settings.refresh_s),
            FilesystemSource(watch_paths(settings.watch_paths), settings.refresh_s),
        ]
    )
    # Started in the worker that serves (after gunicorn forked it), by its first request.
    collector.start(threading.Event())
    return collector


def metrics() -> tuple[bytes, int, dict[str, str]]:
    return generate_latest(exposition_registry(_collector())), 200, {"Content-Type": CONTENT_TYPE_LATEST}


router = Router("collector", metrics=metrics)


@functions_framework.http
def handle(request: flask.Request) -> flask.Response:
    _collector()  # the readiness probe's first request starts the reading, before any scrape
    return router(request)
