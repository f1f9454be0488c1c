"""Webhook calls: the CloudEvent in structured JSON mode, signed, sent to the address that was checked.

X-Easysmart-Signature is `t=<unix seconds>,sha256=<hex HMAC-SHA256 of "<t>." + body>` with the channel's
secret, so a receiver can tell the call is ours and fresh; X-Easysmart-Delivery is stable per
(alert, transition, channel), so a receiver can drop a repeat. Redirects are not followed and the
remote's answer is reduced to its status: it is never shown to whoever configured the URL.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import secrets
import socket
import ssl
import time
from dataclasses import dataclass

from easysmart.netguard import AddressPolicy, Destination, RefusedDestinationError, Resolver, resolve, system_resolver

SIGNATURE_HEADER = "X-Easysmart-Signature"
DELIVERY_HEADER = "X-Easysmart-Delivery"
CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
USER_AGENT = "EasySmartMonitor-Webhook/1"
_REPLY_READ_BYTES = 4096


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The X-Easysmart-Signature value of `body` sent at `timestamp` (unix seconds)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},sha256={digest}"


def verify(secret: str, body: bytes, header: str, now: int, tolerance_s: int = 300) -> bool:
    """What a receiver does: the signature matches and was made within tolerance_s of now."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, body, timestamp), header.strip())


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to, in our words: `ok`, the HTTP status if one came back, and why it failed."""

    ok: bool
    status: int | None = None
    reason: str | None = None


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the checked address whatever the host name resolves to now."""

    def __init__(self, destination: Destination, timeout_s: float) -> None:
        super().__init__(destination.host, destination.port, timeout=timeout_s)
        self.destination = destination

    def connect(self) -> None:
        self.sock = socket.create_connection((self.destination.address, self.destination.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, destination: Destination, timeout_s: float, context: ssl.SSLContext) -> None:
        super().__init__(destination.host, destination.port, timeout=timeout_s, context=context)
        self.destination = destination
        self.tls_context = context

    def connect(self) -> None:
        raw = socket.create_connection((self.destination.address, self.destination.port), self.timeout)
        # SNI and certificate checks are for the name, the connection for the address.
        self.sock = self.tls_context.wrap_socket(raw, server_hostname=self.destination.host)


class WebhookSender:
    """POSTs one body per call, with at most `timeout_s` per connect and per read (a call may ask for less)."""

    def __init__(
        self,
        policy: AddressPolicy,
        timeout_s: float = 5.0,
        resolver: Resolver = system_resolver,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy
        self.timeout_s = timeout_s
        self.resolver = resolver
        self.tls_context = tls_context or ssl.create_default_context()

    def post(
        self, url: str, secret: str, body: bytes, delivery_id: str, now_s: int, timeout_s: float | None = None
    ) -> Outcome:
        try:
            destination = resolve(url, self.policy, self.resolver)
        except RefusedDestinationError as error:
            return Outcome(False, reason=error.message)
        headers = {
            "Host": destination.host_header,
            "Content-Type": CONTENT_TYPE,
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: signature(secret, body, now_s),
            DELIVERY_HEADER: delivery_id,
        }
        timeout = min(self.timeout_s, timeout_s) if timeout_s is not None else self.timeout_s
        connection: http.client.HTTPConnection = (
            _PinnedHTTPSConnection(destination, timeout, self.tls_context)
            if destination.scheme == "https"
            else _PinnedHTTPConnection(destination, timeout)
        )
        started = time.monotonic()
        try:
            connection.request("POST", destination.target, body=body, headers=headers)
            reply = connection.getresponse()
            reply.read(_REPLY_READ_BYTES)  # the body is read only so the connection closes cleanly; never kept
            status = reply.status
        except TimeoutError:
            return Outcome(False, reason=f"no answer within {timeout:g} s")
        except ssl.SSLError as error:
            return Outcome(False, reason=f"TLS failed: {error.reason or 'handshake error'}")
        except ConnectionRefusedError:
            return Outcome(False, reason="connection refused")
        except (OSError, http.client.HTTPException) as error:
            return Outcome(False, reason=f"the call failed: {type(error).__name__}")
        finally:
            connection.close()
        if 200 <= status < 300:
            return Outcome(True, status)
        kind = "redirect (not followed)" if 300 <= status < 400 else f"{status // 100}xx"
        elapsed = time.monotonic() - started
        return Outcome(False, status, f"the receiver answered HTTP {status} ({kind}) after {elapsed:.1f} s")
