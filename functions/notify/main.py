"""notify: alert transitions to the tenant's channels (webhook, e-mail), the minute delivery tick, and the
channels API (easysmart.notify)."""

from __future__ import annotations

import functools

import flask
import functions_framework
import redis

from easysmart.accountstate import AccountStates
from easysmart.config import (
    BackendSettings,
    DatabaseSettings,
    LoggingSettings,
    NotifyDatabaseTimeouts,
    NotifySettings,
    RedisSettings,
    SmtpSettings,
    StreamSettings,
    TokenSettings,
    TracingSettings,
)
from easysmart.db import Database
from easysmart.events import InvalidCloudEventError, cloudevent_from_http
from easysmart.identity import Principal, TokenService, bearer_principal
from easysmart.mail import Mailer
from easysmart.netguard import AddressPolicy
from easysmart.notify import NotifyService
from easysmart.observability import configure_logging, tenant_id_var
from easysmart.stream import AlertStreamPublisher
from easysmart.tracing import configure_tracing
from easysmart.web import Reply, Router
from easysmart.webhooks import WebhookSender

configure_logging("notify", LoggingSettings.from_env())
configure_tracing("notify", TracingSettings.from_env())


@functools.cache
def _clients() -> tuple[NotifyService, TokenService, AccountStates]:
    database, settings = DatabaseSettings.from_env(), NotifySettings.from_env()
    timeouts = NotifyDatabaseTimeouts.from_env()
    db = Database(
        database.database_url,
        database.db_pool_max,
        statement_timeout_s=timeouts.statement_timeout_s,
        lock_timeout_s=timeouts.lock_timeout_s,
    )
    timeout_s = BackendSettings.from_env().backend_timeout_s
    redis_client = redis.Redis.from_url(
        RedisSettings.from_env().redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    policy = AddressPolicy.from_settings(
        settings.notify_webhook_allow_loopback, settings.notify_webhook_allowed_networks
    )
    service = NotifyService(
        db,
        settings,
        WebhookSender(policy, settings.notify_webhook_timeout_s),
        Mailer(SmtpSettings.from_env()),
        live=AlertStreamPublisher(redis_client, StreamSettings.from_env()),
    )
    return service, TokenService(TokenSettings.from_env()), AccountStates(db, redis_client)


def _principal(request: flask.Request) -> Principal:
    _, tokens, states = _clients()
    principal = bearer_principal(request.headers, tokens)
    states.check(principal)
    tenant_id_var.set(principal.tenant_id)
    return principal


def receive(request: flask.Request) -> Reply:
    event = cloudevent_from_http(request.headers, request.get_data())
    if event is None:
        raise InvalidCloudEventError("notify takes CloudEvents (alert transitions and the delivery tick)")
    return Reply(200, _clients()[0].receive(event))


def list_channels(request: flask.Request) -> Reply:
    return Reply(200, _clients()[0].list_channels(_principal(request), request.args))


def create_channel(request: flask.Request) -> Reply:
    return Reply(201, _clients()[0].create_channel(_principal(request), request.get_data()))


def confirm_recipient(request: flask.Request) -> Reply:
    return Reply(200, _clients()[0].confirm_recipient(request.args.get("token")))


def delete_channel(request: flask.Request, channel_id: str) -> Reply:
    _clients()[0].delete_channel(_principal(request), channel_id)
    return Reply(204, None)


def rotate_secret(request: flask.Request, channel_id: str) -> Reply:
    return Reply(200, _clients()[0].rotate_secret(_principal(request), channel_id))


def test_channel(request: flask.Request, channel_id: str) -> Reply:
    return Reply(200, _clients()[0].test_channel(_principal(request), channel_id))


router = Router("notify")
router.add("POST", "/", receive)
router.add("GET", "/api/v1/alerts/channels", list_channels)
router.add("POST", "/api/v1/alerts/channels", create_channel)
router.add("GET", "/api/v1/alerts/channels/confirm", confirm_recipient)
router.add("DELETE", "/api/v1/alerts/channels/{channel_id}", delete_channel)
router.add("POST", "/api/v1/alerts/channels/{channel_id}/rotate", rotate_secret)
router.add("POST", "/api/v1/alerts/channels/{channel_id}/test", test_channel)


@functions_framework.http
def handle(request: flask.Request) -> flask.Response:
    return router(request)
