"""Every Prometheus metric the backend exports, in one catalogue.

Names follow Prometheus conventions: the unit in the name (`_seconds`, `_bytes`), `_total` on
counters, and only bounded label values (outcomes, reason classes, operations, topics,
partitions, days); never a tenant, account, device or batch id. The alerting rules and the
dashboard under infra/observability/ may name only metrics declared here, which a test checks.

Functions served by gunicorn count per worker and `/metrics` sums the workers (see
easysmart.observability). The kafka-source bridge is one process with a metrics port of its own.
The collector computes its gauges from a cached snapshot on each scrape.
"""

from __future__ import annotations

import os

from prometheus_client import Counter, Gauge, Histogram

# Each gunicorn worker counts on its own. With PROMETHEUS_MULTIPROC_DIR set, prometheus_client
# keeps the counts in files there and /metrics sums every worker's, so a scrape sees the whole
# function whichever worker answers it. The directory must start empty with the function.
# prometheus_client reads the variable itself, so it is read here as the library does.
METRICS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if METRICS_DIR:
    os.makedirs(METRICS_DIR, exist_ok=True)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_DELAY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_READINGS_BUCKETS = (1, 10, 40, 100, 1_000, 10_000, 100_000, 1_000_000)
_BYTES_BUCKETS = (1_024, 8_192, 65_536, 524_288, 4_194_304, 33_554_432, 268_435_456)

# --- HTTP, every function ---------------------------------------------------------------------
HTTP_REQUESTS = Counter("esm_http_requests_total", "HTTP requests answered", ["function", "route", "status"])
HTTP_LATENCY = Histogram(
    "esm_http_request_seconds",
    "HTTP request latency",
    ["function", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
)

# --- ingest -----------------------------------------------------------------------------------
# outcome: accepted, duplicate, or the class of the refusal: bad_request, unauthorized, forbidden, too_large,
# unsupported_media_type, unprocessable, rate_limited, unavailable, error.
INGEST_UPLOADS = Counter("esm_ingest_uploads_total", "Uploads answered by ingest, by outcome", ["outcome"])
INGEST_RECEIVED_BYTES = Counter("esm_ingest_received_bytes_total", "Upload body bytes received, as sent")
# The text ingest reads into its synchronous window: decompressed, or as sent when the upload is not gzip.
INGEST_DECOMPRESSED_BYTES = Counter(
    "esm_ingest_decompressed_bytes_total", "Bytes decompressed by ingest (its synchronous window)"
)
INGEST_WINDOW_PARSE = Histogram(
    "esm_ingest_sync_window_parse_seconds", "Time to parse the synchronous window", buckets=_LATENCY_BUCKETS
)
# limit: device, client_address, decompression_budget
INGEST_RATE_LIMITED = Counter("esm_ingest_rate_limited_total", "Uploads refused by a rate limit", ["limit"])
KAFKA_PUBLISH_LATENCY = Histogram(
    "esm_kafka_publish_seconds", "Time until Kafka acknowledged a record (acks=all)", buckets=_LATENCY_BUCKETS
)
# operation: put, get (until the answer's headers: the body is read while it is parsed), delete
OBJECT_STORE_LATENCY = Histogram(
    "esm_object_store_request_seconds", "Object store request latency", ["operation"], buckets=_LATENCY_BUCKETS
)

# --- process ----------------------------------------------------------------------------------
# outcome: done (a redelivery of a done batch too), failed (permanently, a 4xx; dead-lettered by the bridge),
# retry (a 5xx: an outage, or an unexpected error below the cap; delivered again)
PROCESS_BATCHES = Counter("esm_process_batches_total", "Claim checks handled by process, by outcome", ["outcome"])
# outcome: stored, duplicate, skipped, rejected
PROCESS_READINGS = Counter("esm_process_readings_total", "Readings handled by process, by outcome", ["outcome"])
PROCESS_BATCH_DURATION = Histogram(
    "esm_process_batch_duration_seconds", "Time to process one batch, download to commit", buckets=_DELAY_BUCKETS
)
PROCESS_BATCH_READINGS = Histogram(
    "esm_process_batch_readings", "Readings per processed batch", buckets=_READINGS_BUCKETS
)
PROCESS_BATCH_BYTES = Histogram(
    "esm_process_batch_decompressed_bytes", "Decompressed size of each processed batch", buckets=_BYTES_BUCKETS
)
PROCESS_END_TO_END = Histogram(
    "esm_process_end_to_end_delay_seconds", "From ingest's acceptance to process's commit", buckets=_DELAY_BUCKETS
)
# A claim check of a batch already done, or done meanwhile by a concurrent delivery (answered with its counts); a
# delivery again after a retry is not counted here (its first answer was counted as outcome retry).
PROCESS_REDELIVERIES = Counter(
    "esm_process_redeliveries_total", "Claim checks delivered again for a batch already done or being processed"
)
# reason: unsigned_claim (not a claim check ingest signed: unsigned, altered or unreadable), blob_mismatch (missing,
# or not the claim's metadata or sha256), invalid_upload (corrupt, not JSON, over a limit, unusable items, or its
# tenant is gone), database_rejected (a data exception or a constraint), too_many_failures (unexpected errors)
PROCESS_DEAD_LETTERED = Counter(
    "esm_process_dead_lettered_total",
    "Batches answered as permanently failed (the bridge dead-letters them)",
    ["reason"],
)

# --- auth -------------------------------------------------------------------------------------
# outcome: success, failure (401), locked (the username and address pair), throttled (the username, from any
# address), rate_limited (the client address); a malformed body or an outage is not counted as a login
AUTH_LOGINS = Counter("esm_auth_logins_total", "Login attempts, by outcome", ["outcome"])
AUTH_LOCKOUTS = Counter("esm_auth_lockouts_total", "Username and address pairs locked after repeated failures")
# outcome: success, failure (401); a malformed body or an outage is not counted
AUTH_REFRESHES = Counter("esm_auth_refreshes_total", "Token refreshes, by outcome", ["outcome"])
AUTH_REFRESH_REUSE = Counter(
    "esm_auth_refresh_reuse_detections_total", "Refresh tokens presented again after rotation (the family is revoked)"
)

# --- analytics -----------------------------------------------------------------------------------
# outcome: hit (the materialised part came from Redis), miss (no entry, or Redis unused after an error), stale
# (an entry of an older cache generation or sensors since renamed: read again and replaced); plain PostgreSQL only
ANALYTICS_CACHE_LOOKUPS = Counter(
    "esm_analytics_cache_lookups_total", "History pages' materialised parts looked up in the cache", ["outcome"]
)

# --- kafka-source bridge (its own metrics port) ------------------------------------------------
BRIDGE_CONSUMER_LAG = Gauge(
    "esm_bridge_consumer_lag_messages",
    "Records not yet delivered, per partition",
    ["topic", "partition"],
    multiprocess_mode="mostrecent",
)
# status: the sink's answer class (2xx, 4xx, 5xx) or error when there was no answer
BRIDGE_DELIVERIES = Counter(
    "esm_bridge_deliveries_total", "Delivery attempts to the sink, by answer class", ["topic", "status"]
)
BRIDGE_RETRIES = Counter("esm_bridge_delivery_retries_total", "Deliveries retried after a retriable answer", ["topic"])
BRIDGE_DEAD_LETTERS = Counter("esm_bridge_dead_letters_total", "Records written to the dead-letter topic", ["topic"])
BRIDGE_DLQ_DEPTH = Gauge(
    "esm_bridge_dead_letter_topic_messages",
    "Records held by a route's dead-letter topic",
    ["topic"],
    multiprocess_mode="mostrecent",
)
BRIDGE_DELIVERY_LATENCY = Histogram(
    "esm_bridge_delivery_seconds", "One delivery attempt to the sink", ["topic"], buckets=_DELAY_BUCKETS
)

# --- collector (what lives outside a request) ----------------------------------------------------
# prefix: the key's first segment (raw); day: the key's date
OBJECT_STORE_OBJECTS = Gauge(
    "esm_object_store_objects", "Objects in the bucket", ["prefix", "day"], multiprocess_mode="mostrecent"
)
OBJECT_STORE_BYTES = Gauge(
    "esm_object_store_bytes", "Bytes in the bucket", ["prefix", "day"], multiprocess_mode="mostrecent"
)
DB_RAW_BYTES = Gauge(
    "esm_db_raw_bytes", "Size on disk of the raw readings (every partition or chunk)", multiprocess_mode="mostrecent"
)
DB_AGGREGATE_BYTES = Gauge(
    "esm_db_aggregate_bytes", "Size on disk of each aggregate", ["aggregate"], multiprocess_mode="mostrecent"
)
DB_PARTITIONS = Gauge(
    "esm_db_partitions", "Partitions or chunks of each table", ["table"], multiprocess_mode="mostrecent"
)
DB_DATABASE_BYTES = Gauge("esm_db_database_bytes", "Size on disk of the whole database", multiprocess_mode="mostrecent")
AGGREGATE_WATERMARK_AGE = Gauge(
    "esm_aggregate_watermark_age_seconds",
    "Age of each aggregate's watermark (its last refresh)",
    ["aggregate"],
    multiprocess_mode="mostrecent",
)
RAW_OLDEST_DAY = Gauge(
    "esm_raw_oldest_day_timestamp_seconds",
    "Start of the oldest day of raw readings kept",
    multiprocess_mode="mostrecent",
)
BATCHES_STUCK = Gauge(
    "esm_batches_stuck_processing",
    "Batches in processing for longer than COLLECTOR_STUCK_AFTER_S",
    multiprocess_mode="mostrecent",
)
OUTBOX_OLDEST_WAITING_AGE = Gauge(
    "esm_outbox_oldest_waiting_age_seconds",
    "Age of the oldest outbox event waiting for the relay when the collector read it (0: none waits)",
    multiprocess_mode="mostrecent",
)
OUTBOX_REFUSED = Gauge(
    "esm_outbox_events_refused",
    "Outbox events Kafka refused for good and the relay skipped, kept for a week",
    ["topic"],
    multiprocess_mode="mostrecent",
)
# volume: a name given in COLLECTOR_WATCH_PATHS (the local stack watches its state folder)
FILESYSTEM_FREE = Gauge(
    "esm_filesystem_free_bytes", "Free bytes of a watched filesystem", ["volume"], multiprocess_mode="mostrecent"
)
FILESYSTEM_SIZE = Gauge(
    "esm_filesystem_size_bytes", "Size of a watched filesystem", ["volume"], multiprocess_mode="mostrecent"
)
COLLECTOR_LAST_SUCCESS = Gauge(
    "esm_collector_last_success_timestamp_seconds",
    "When each source was last read successfully",
    ["source"],
    multiprocess_mode="mostrecent",
)
