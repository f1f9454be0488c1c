"""Process and ingest throughput with tracing on (10 % sampled, exported to a local OTLP/HTTP receiver) and off.

Each round runs process and ingest once with tracing on and once off, each in its own interpreter, the order
alternating, so drift on a shared machine falls on both alike; the medians are compared (the issue allows a
drop of at most 5 %). Both run in-process against the local stack's services:
- process: --batches uploads of --readings readings each, staged as blobs first (not timed), then delivered
  one after the other to the process function's app as the bridge delivers them (a binary-mode CloudEvent; on,
  with the traceparent ingest would have set, sampled at the ratio);
- ingest: --uploads uploads of about 64 KiB gzip, one after the other, to the ingest function's app, claim
  checks to a topic nobody consumes (`bench.raw`), with a front door's traceparent (not sampled: ingest decides).

    python bench/tracing_cost.py --rounds 5 --ratio 0.1
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ingest_load import BENCH_TOPIC, ensure_bench_topic

ROOT = Path(__file__).resolve().parent.parent


class Receiver:
    """An OTLP/HTTP trace receiver counting the spans it is sent (decoded with opentelemetry-proto)."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.spans = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                request = ExportTraceServiceRequest.FromString(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.spans += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def traceparent(sampled: bool) -> str:
    return f"00-{random.getrandbits(128):032x}-{random.getrandbits(64):016x}-{'01' if sampled else '00'}"


def new_device(suffix: str) -> tuple[str, str, str]:
    from easysmart import accounts
    from easysmart.config import DatabaseSettings
    from easysmart.db import Database

    db = Database(DatabaseSettings.from_env().database_url, 1)
    with db.transaction() as cursor:
        tenant_id = accounts.create_tenant(cursor, f"bench-trace-{suffix}", "America/Sao_Paulo")
        account_id = accounts.create_account(cursor, f"bench-trace-{suffix}", "device", f"bench-trace-{suffix}", "b")
    db.close()
    return tenant_id, account_id, f"bench-trace-{suffix}"


def function_app(name: str):
    from functions_framework import create_app

    return create_app(target="handle", source=str(ROOT / "functions" / name / "main.py")).test_client()


def measure_process(batches: int, readings: int, traced: bool, ratio: float) -> dict:
    import orjson
    from uploads import client_upload, stage_blob

    from easysmart.claimsig import ClaimKeyring
    from easysmart.config import ClaimSigningSettings, ObjectStoreSettings
    from easysmart.events import to_cloudevent, to_http
    from easysmart.storage import make_blob_store

    suffix = uuid.uuid4().hex[:8]
    tenant_id, account_id, device = new_device(suffix)
    store = ObjectStoreSettings.from_env()
    blobs = make_blob_store(store, timeout_s=60)
    keyring = ClaimKeyring.from_settings(ClaimSigningSettings.from_env())
    deliveries = []
    # One installation's successive uploads: the same sensors, each upload the window before the next one's.
    window = timedelta(seconds=10 * max(1, readings // 24) + 60)
    newest = datetime.now() - timedelta(minutes=5)
    for number in range(batches + 1):
        text = orjson.dumps(client_upload(readings, values_seed=number, end=newest - number * window))
        body = gzip.compress(text, 6)
        claim = stage_blob(
            blobs,
            keyring,
            tenant_id,
            account_id,
            device,
            body,
            len(text),
            traceparent(random.random() < ratio) if traced else None,
        )
        headers, data = to_http(to_cloudevent(claim))
        if claim.traceparent:
            headers["traceparent"] = claim.traceparent  # as the bridge's delivery span passes it on
        deliveries.append((headers, data))
    process = function_app("process")

    def deliver(headers: dict[str, str], data: bytes) -> int:
        answer = process.post("/", headers=headers, data=data)
        if answer.status_code != 200:
            raise SystemExit(f"process answered {answer.status_code}: {answer.data[:300]!r}")
        return answer.json["stored"]

    deliver(*deliveries.pop())  # warm-up: connections, the sensors, the day partitions, the tracer
    stored = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    for headers, data in deliveries:
        stored += deliver(headers, data)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {"process_readings_per_s": round(stored / wall), "process_cpu_s": round(cpu, 3), "stored": stored}


def measure_ingest(uploads: int, traced: bool) -> dict:
    from uploads import sized_for_gzip, unique_variant

    from easysmart.config import TokenSettings
    from easysmart.identity import Principal, TokenService

    tenant_id, account_id, device = new_device(uuid.uuid4().hex[:8])
    token = TokenService(TokenSettings.from_env()).access_token(Principal(account_id, tenant_id, "device", device))
    body = sized_for_gzip(64 * 1024)[2]
    ingest = function_app("ingest")
    tag_base = random.getrandbits(40)

    def upload(tag: int) -> None:
        headers = {"Authorization": f"Bearer {token}", "Content-Encoding": "gzip"}
        if traced:
            headers["traceparent"] = traceparent(False)  # as the front door makes one; ingest decides
        answer = ingest.post("/api/v1/telemetry/bulk", data=unique_variant(body, tag), headers=headers)
        if answer.status_code != 201:
            raise SystemExit(f"ingest answered {answer.status_code}: {answer.data[:300]!r}")

    for tag in range(5):  # warm-up: connections, the producer, pools
        upload(tag_base + tag)
    started, cpu_started = time.perf_counter(), time.process_time()
    for tag in range(5, 5 + uploads):
        upload(tag_base + tag)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {"ingest_uploads_per_s": round(uploads / wall, 1), "ingest_cpu_s": round(cpu, 3)}


def span_cpu_us(endpoint: str, ratio: float, spans: int) -> float:
    """CPU microseconds per span (two nested, as requests make them) exported to `endpoint` at `ratio`, the export
    thread's included: the cost the rounds measure, without their noise."""
    from easysmart import tracing
    from easysmart.config import TracingSettings

    tracing.configure_tracing("bench", TracingSettings(otel_exporter_otlp_endpoint=endpoint, trace_sample_ratio=ratio))
    with tracing.span("warm-up"):
        pass
    started = time.process_time()
    for _ in range(spans // 1000):
        for _ in range(500):
            with tracing.span("request"), tracing.span("phase"):
                pass
        tracing.flush()  # within the processor's queue (2048 spans), so none is dropped
    cost = (time.process_time() - started) / spans * 1e6
    tracing.configure_tracing("bench", TracingSettings())
    return round(cost, 1)


def one_round(args: argparse.Namespace, what: str, endpoint: str | None) -> dict:
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint or "",
        "TRACE_SAMPLE_RATIO": str(args.ratio),
        "KAFKA_TOPIC_RAW": BENCH_TOPIC,
        "RATELIMIT_DEVICE_PER_MINUTE": "100000000",
        "RATELIMIT_ADDRESS_PER_MINUTE": "100000000",
        "INGEST_DEVICE_DECOMPRESSED_BYTES_PER_HOUR": str(2**50),
        "LOG_LEVEL": "warning",
    }
    command = [sys.executable, __file__, "--measure", what, "--ratio", str(args.ratio)]
    command += ["--batches", str(args.batches), "--readings", str(args.readings), "--uploads", str(args.uploads)]
    child = subprocess.run(command + (["--traced"] if endpoint else []), capture_output=True, text=True, env=env)
    if child.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{child.stderr[-4000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--readings", type=int, default=2000)
    parser.add_argument("--uploads", type=int, default=150)
    parser.add_argument("--measure", choices=("process", "ingest"), help=argparse.SUPPRESS)  # internal: one child
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure == "process":
        measured = measure_process(args.batches, args.readings, args.traced, args.ratio)
    elif args.measure == "ingest":
        measured = measure_ingest(args.uploads, args.traced)
    if args.measure:
        from easysmart import tracing

        tracing.flush()
        print(json.dumps(measured))
        return

    ensure_bench_topic()
    receiver = Receiver()
    # Throughput, and CPU seconds of the child's threads (the export thread's too): steadier on a shared machine.
    names = ("process_readings_per_s", "process_cpu_s", "ingest_uploads_per_s", "ingest_cpu_s")
    figures: dict[str, dict[str, list[float]]] = {name: {"on": [], "off": []} for name in names}
    for index in range(args.rounds):
        for mode in ("off", "on") if index % 2 == 0 else ("on", "off"):
            for what in ("process", "ingest"):
                measured = one_round(args, what, receiver.endpoint if mode == "on" else None)
                for name in names:
                    if name in measured:
                        figures[name][mode].append(measured[name])
                print(json.dumps({"round": index + 1, "tracing": mode, "bench": what, **measured}), flush=True)
    summary: dict[str, object] = {
        "sample_ratio": args.ratio,
        "spans_received": receiver.spans,
        "span_cpu_us_unsampled": span_cpu_us(receiver.endpoint, 0.0, 20_000),
        "span_cpu_us_sampled": span_cpu_us(receiver.endpoint, 1.0, 20_000),
    }
    for name, modes in figures.items():
        on, off = statistics.median(modes["on"]), statistics.median(modes["off"])
        summary[f"median_{name}_traced"] = on
        summary[f"median_{name}_untraced"] = off
        summary[f"{name}_change_pct"] = round(100 * (on - off) / off, 1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
