"""alerts: a placeholder that lets the local stack, the front door and the manifests wire the function in.

Answers 200 on /health and a JSON 404 on every other route; the alerts function (rules and alerts API, the
telemetry.stored CloudEvents and the PingSource tick) replaces it.
"""

from __future__ import annotations

import flask
import functions_framework

from easysmart.config import DatabaseSettings
from easysmart.web import Reply, Router

DATABASE = DatabaseSettings.from_env()

router = Router("alerts")
# The Router answers /_/health, /_/ready and /healthz itself.
router.add("GET", "/health", lambda request: Reply(200, {"status": "ok", "function": "alerts"}))


@functions_framework.http
def handle(request: flask.Request) -> flask.Response:
    return router(request)
