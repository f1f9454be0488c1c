"""The front doors' nginx configurations on a private nginx: the local one (infra/local/nginx.conf.template)
and the Knative front proxy's (infra/k8s/base/frontproxy/frontproxy.yaml).

Each is rendered as it is deployed, with a test secret and free ports, and every upstream points at
one echo server that answers what it received and the client address the
functions would take from it. The client connects from 127.0.0.5, so the front door's peer
address (127.0.0.5) differs from the echo server's (127.0.0.1): a believed X-Real-IP shows.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import flask
import orjson
import pytest
from support.stack import wait_until
from werkzeug.serving import make_server

from easysmart.config import ProxySettings
from easysmart.web import PROXY_SECRET_HEADER, ProxyTrust, client_address

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "infra" / "local" / "nginx.conf.template"
FRONT_PROXY = REPO / "infra" / "k8s" / "base" / "frontproxy" / "frontproxy.yaml"
SECRET = "front-door-test-secret-" + "f" * 24
CLIENT_ADDRESS = "127.0.0.5"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int, process: subprocess.Popen) -> bool:
    assert process.poll() is None, f"nginx exited: {process.stderr.read().decode() if process.stderr else ''}"
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
        return True
    except OSError:
        return False


# The echo server's event stream sends its second message once the client has received the first.
FIRST_EVENT_RECEIVED = threading.Event()


def event_stream():
    yield b"id: 1-0\nevent: fired\ndata: {}\n\n"
    second = "after-the-first-arrived" if FIRST_EVENT_RECEIVED.wait(10) else "the-first-was-held-back"
    yield f"id: 2-0\nevent: {second}\ndata: {{}}\n\n".encode()


@pytest.fixture(scope="module")
def echo_port():
    trust = ProxyTrust.from_settings(ProxySettings(front_proxy_secret=SECRET))
    app = flask.Flask("echo")

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
    @app.route("/<path:path>", methods=["GET", "POST"])
    def echo(path: str) -> flask.Response:
        if flask.request.args.get("sse"):
            return flask.Response(event_stream(), mimetype="text/event-stream")
        received = {name.lower(): flask.request.headers.getlist(name) for name in flask.request.headers.keys()}
        body = {"path": "/" + path, "headers": received, "address": client_address(flask.request, trust)}
        return flask.Response(orjson.dumps(body), mimetype="application/json")

    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()
    thread.join()


def local_front_door(prefix: Path, port: int, upstream_port: int) -> str:
    """infra/local/nginx.conf.template as infra/local/stack.sh renders it."""
    values = {
        "FRONTDOOR_PORT": port,
        "AUTH_PORT": upstream_port,
        "INGEST_PORT": upstream_port,
        "ANALYTICS_PORT": upstream_port,
        "ALERTS_PORT": upstream_port,
        "NOTIFY_PORT": upstream_port,
        "STREAM_PORT": upstream_port,
        "ADMIN_PORT": upstream_port,
        "PREFIX": prefix,
        "LOGS": prefix,
        "FRONT_PROXY_SECRET": SECRET,
    }
    return re.sub(r"@([A-Z_]+)@", lambda match: str(values[match.group(1)]), TEMPLATE.read_text())


def knative_front_proxy(prefix: Path, port: int, upstream_port: int) -> str:
    """The front proxy's template (ConfigMap frontproxy-nginx) as its image renders it (envsubst), inside the
    http block of the image's nginx.conf, with Kourier's in-cluster gateway and the listen port moved here."""
    manifest = FRONT_PROXY.read_text()
    block = manifest.split("  default.conf.template: |\n", 1)[1].split("\n---\n", 1)[0]
    server = "\n".join(line.removeprefix("    ") for line in block.splitlines())
    for old, new in [
        ("${FRONT_PROXY_SECRET}", SECRET),
        ("kourier-internal.kourier-system.svc.cluster.local:80", f"127.0.0.1:{upstream_port}"),
        ("listen 8080;", f"listen 127.0.0.1:{port};"),
        ("/var/log/nginx/access.log", f"{prefix}/frontdoor-access.log"),
    ]:
        assert old in server, old
        server = server.replace(old, new)
    temp_paths = " ".join(f"{name}_temp_path {prefix}/tmp/{name};" for name in ("proxy", "fastcgi", "uwsgi", "scgi"))
    return (
        f"pid {prefix}/nginx.pid; error_log {prefix}/error.log warn; events {{ worker_connections 64; }}\n"
        f"http {{ client_body_temp_path {prefix}/tmp/body; {temp_paths} access_log off;\n{server}\n}}\n"
    )


@contextlib.contextmanager
def nginx_serving(render, echo_port: int, prefix: Path) -> Iterator[int]:
    """A private nginx with the configuration `render` makes, until the block ends; its port."""
    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed")
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / "tmp" / name).mkdir(parents=True)
    port = free_port()
    (prefix / "nginx.conf").write_text(render(prefix, port, echo_port))
    ACCESS_LOGS[port] = prefix / "frontdoor-access.log"
    command = [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: listening(port, process), 20, 0.05, f"nginx listening on {port}")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module", params=[local_front_door, knative_front_proxy], ids=["local", "knative"])
def front_door(request, echo_port, tmp_path_factory) -> Iterator[int]:
    with nginx_serving(request.param, echo_port, tmp_path_factory.mktemp("nginx")) as port:
        yield port


class ConnectionEcho(BaseHTTPRequestHandler):
    """Answers which of its connections (the peer's port) a request came on, keeping connections open as
    gunicorn does (werkzeug's server closes each after one request)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = orjson.dumps({"connection": self.client_address[1]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def local_door(tmp_path_factory) -> Iterator[int]:
    """The local front door in front of functions that keep connections open."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), ConnectionEcho)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with nginx_serving(local_front_door, server.server_port, tmp_path_factory.mktemp("nginx")) as port:
            yield port
    finally:
        server.shutdown()
        thread.join()


# Each front door's access log (both render theirs into the nginx prefix), by its port.
ACCESS_LOGS: dict[int, Path] = {}


def logged_traceparents(port: int) -> list[str]:
    log = ACCESS_LOGS[port]
    return [orjson.loads(line)["traceparent"] for line in log.read_text().splitlines()] if log.exists() else []


def through_front_door(port: int, path: str, headers: list[tuple[str, str]]) -> tuple[int, dict]:
    """GET path from CLIENT_ADDRESS, sending headers as given (repeated names and odd spellings kept)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(CLIENT_ADDRESS, 0))
    try:
        connection.putrequest("GET", path)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, orjson.loads(response.read())
    finally:
        connection.close()


FORGED = [
    ("X-Real-IP", "203.0.113.7"),
    ("X-Forwarded-For", "203.0.113.8"),
    (PROXY_SECRET_HEADER, "forged-by-the-client"),
    (PROXY_SECRET_HEADER.lower(), "forged-again"),
    ("X-ESM-Proxy_Secret", "forged-with-an-underscore"),
]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/auth/login",
        "/api/v1/telemetry/bulk",
        "/api/v1/analytics/x",
        "/api/v1/alerts",
        "/api/v1/alerts/rules",
        "/api/v1/alerts/channels",
        "/api/v1/alerts/channels/x/test",
        "/api/v1/alerts/stream",
        "/api/v1/alerts/stream/ticket",
        "/api/v1/admin/users",
    ],
)
def test_the_front_door_replaces_a_client_supplied_secret_and_addresses(front_door, path):
    status, echoed = through_front_door(front_door, path, FORGED)

    assert status == 200 and echoed["path"] == path
    assert echoed["headers"]["x-esm-proxy-secret"] == [SECRET]
    assert echoed["headers"]["x-real-ip"] == [CLIENT_ADDRESS]
    assert echoed["headers"]["x-forwarded-for"] == [CLIENT_ADDRESS]


def test_a_request_through_the_front_door_has_its_x_real_ip_believed(front_door):
    _, echoed = through_front_door(front_door, "/api/v1/auth/me", [])

    assert echoed["address"] == CLIENT_ADDRESS


def test_forged_headers_sent_around_the_front_door_are_not_believed(echo_port):
    # What anything else in the cluster could send straight to a function (here from loopback).
    _, echoed = through_front_door(echo_port, "/api/v1/auth/me", FORGED)

    assert echoed["address"] == CLIENT_ADDRESS
    assert echoed["headers"]["x-real-ip"] == ["203.0.113.7"]


def test_the_live_stream_passes_each_event_as_it_comes_uncompressed(front_door):
    FIRST_EVENT_RECEIVED.clear()
    connection = http.client.HTTPConnection("127.0.0.1", front_door, timeout=15)
    try:
        connection.request("GET", "/api/v1/alerts/stream?ticket=t&sse=1", headers={"Accept-Encoding": "gzip"})
        response = connection.getresponse()
        first = b"".join(response.readline() for _ in range(4))
        FIRST_EVENT_RECEIVED.set()
        rest = response.read()
    finally:
        connection.close()

    assert response.status == 200 and response.getheader("Content-Type", "").startswith("text/event-stream")
    assert response.getheader("Content-Encoding") is None
    assert first == b"id: 1-0\nevent: fired\ndata: {}\n\n"
    assert b"event: after-the-first-arrived" in rest


def test_the_detailed_health_is_not_behind_the_front_door(front_door):
    connection = http.client.HTTPConnection("127.0.0.1", front_door, timeout=10)
    connection.request("GET", "/api/v1/health/detailed")
    response = connection.getresponse()

    assert response.status == 404
    assert orjson.loads(response.read())["error"] == "not_found"


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_clients_traceparent_is_passed_on_and_logged(front_door):
    _, echoed = through_front_door(front_door, "/api/v1/telemetry/bulk", [("traceparent", TRACEPARENT)])

    assert echoed["headers"]["traceparent"] == [TRACEPARENT]
    wait_until(lambda: TRACEPARENT in logged_traceparents(front_door), 10, 0.05, "the access log line")


@pytest.mark.parametrize(
    "sent",
    [
        [],
        [("traceparent", "not-a-traceparent")],
        [("traceparent", TRACEPARENT.upper())],
        [("traceparent", "00-" + "0" * 32 + "-00f067aa0ba902b7-01")],
        [("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01")],
    ],
    ids=["none", "malformed", "upper-case", "zero trace id", "zero parent id"],
)
def test_without_a_valid_traceparent_the_front_door_makes_one_and_logs_it(front_door, sent):
    made = []
    for _ in range(2):
        _, echoed = through_front_door(front_door, "/api/v1/analytics/x", sent)
        made += echoed["headers"]["traceparent"]

    for traceparent in made:
        match = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-00", traceparent)
        assert match, traceparent
        trace_id, parent_id = match.groups()
        assert trace_id.strip("0") and parent_id.strip("0") and parent_id == trace_id[16:]
        wait_until(lambda: traceparent in logged_traceparents(front_door), 10, 0.05, "the access log line")
    assert made[0] != made[1]  # one trace per request


def test_the_local_front_door_reuses_a_functions_connection_and_closes_it_first_when_idle(local_door):
    # gunicorn closes a connection idle for 2 s; a POST nginx sent on it just then would be a 502, so nginx must
    # close its idle connections sooner (1 s). This waits for nginx's real idle timer. One client connection, so
    # one nginx worker (each keeps its own connections to the functions).
    client = http.client.HTTPConnection("127.0.0.1", local_door, timeout=10)

    def connection_used() -> int:
        client.request("GET", "/api/v1/telemetry/batches/x")
        return orjson.loads(client.getresponse().read())["connection"]

    try:
        connections = [connection_used() for _ in range(3)]
        time.sleep(1.5)
        after_idle = connection_used()
    finally:
        client.close()

    assert connections[0] == connections[1] == connections[2]
    assert after_idle != connections[0]
