"""notify: a placeholder that lets the local stack, the front door and the manifests wire the function in.

Answers 200 on /health and a JSON 404 on every other route; the notify function (channels API, deliveries of the
alert transitions and the PingSource delivery job) replaces it.
"""

from __future__ import annotations

import flask
import functions_framework

from easysmart.config import DatabaseSettings
from easysmart.web import Reply, Router

DATABASE = DatabaseSettings.from_env()

router = Router("notify")
# The Router answers /_/health, /_/ready and /healthz itself.
router.add("GET", "/health", lambda request: Reply(200, {"status": "ok", "function": "notify"}))


@functions_framework.http
def handle(request: flask.Request) -> flask.Response:
    return router(request)
