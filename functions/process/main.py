"""process: receives the claim-check CloudEvent and writes the upload's readings (docs/architecture.md §3.6, §6)."""
from __future__ import annotations

import functools

import flask
import functions_framework

from easysmart.config import settings
from easysmart.db import Database
from easysmart.events import from_cloudevent, from_http_request
from easysmart.observability import configure_logging
from easysmart.process import BatchProcessor
from easysmart.storage import BlobStore, make_s3_client
from easysmart.web import Reply, Router

configure_logging("process")


@functools.cache
def _processor() -> BatchProcessor:
    config = settings()
    # Large blobs stream for a while: the read timeout is per socket read, not per download.
    blobs = BlobStore(make_s3_client(config, timeout_s=max(config.backend_timeout_s, 30.0)), config.s3_bucket)
    return BatchProcessor(config, Database(config.database_url, config.db_pool_max), blobs)


def receive(request: flask.Request) -> Reply:
    claim = from_cloudevent(from_http_request(request.headers, request.get_data()))
    result = _processor().process(claim)
    return Reply(200, result.body())


router = Router("process")
router.add("POST", "/", receive)


@functions_framework.http
def handle(request: flask.Request) -> flask.Response:
    return router(request)
