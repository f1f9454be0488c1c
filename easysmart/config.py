"""Configuration from environment variables (12-factor), one frozen group per concern.

Each variable is declared once, as a field of its group: its name, type, default (none: required)
and description. A function reads only the groups it uses (`SomeSettings.from_env()` in
functions/<name>/main.py), so its manifest carries only their variables: `esm config vars
--function <name>` lists them from this table and `make check-manifests` holds the manifests to it.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, TypeVar

from easysmart.errors import EasySmartError

MiB = 1024 * 1024
DAY_SECONDS = 86400

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(EasySmartError, RuntimeError):
    """A required environment variable is missing or one is malformed."""

    status, code = 500, "misconfigured"


@dataclass(frozen=True)
class Variable:
    """One environment variable: what the table says about it."""

    name: str
    group: str
    type: str
    default: object  # dataclasses.MISSING when required
    description: str
    secret: bool = False
    choices: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    def parse(self, raw: str) -> object:
        """The value of a set variable; ConfigError names the variable when raw is malformed."""
        value = _PARSERS[self.type](self.name, raw)
        if self.choices:
            value = str(value).strip().lower()
            if value not in self.choices:
                raise ConfigError(
                    f"environment variable {self.name} must be one of {', '.join(self.choices)}; got {raw!r}"
                )
        return value

    def default_text(self) -> str:
        if self.required:
            return ""
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, tuple):
            return ",".join(self.default)
        return str(self.default)


def env(
    name: str,
    description: str,
    default: object = dataclasses.MISSING,
    *,
    secret: bool = False,
    choices: tuple[str, ...] = (),
) -> Any:
    """A group's field read from the environment variable `name` (no default: required)."""
    return dataclasses.field(default=default, metadata={"env": (name, description, secret, choices)})


def _integer(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer, got {raw!r}") from None


def _number(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be a number, got {raw!r}") from None


def _boolean(name: str, raw: str) -> bool:
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConfigError(f"environment variable {name} must be one of 1/0, true/false, yes/no, on/off; got {raw!r}")


def _names(name: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


# The types a field may have, by the name the table gives them, and how each is read.
_TYPE_NAMES: dict[object, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    tuple[str, ...]: "comma-separated list",
}
_PARSERS: dict[str, Callable[[str, str], object]] = {
    "string": lambda name, raw: raw,
    "integer": _integer,
    "number": _number,
    "boolean": _boolean,
    "comma-separated list": _names,
}

G = TypeVar("G", bound="Group")


class Group:
    """Base of the settings groups: frozen dataclasses whose fields are `env(...)` declarations."""

    GROUPS: ClassVar[list[type[Group]]] = []

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        Group.GROUPS.append(cls)

    @classmethod
    def variables(cls) -> list[Variable]:
        hints = typing.get_type_hints(cls)
        out = []
        for field in dataclasses.fields(cls):  # type: ignore[arg-type]
            name, description, secret, choices = field.metadata["env"]
            out.append(
                Variable(
                    name, cls.__name__, _TYPE_NAMES[hints[field.name]], field.default, description, secret, choices
                )
            )
        return out

    @classmethod
    def from_env(cls: type[G], environ: Mapping[str, str] | None = None) -> G:
        """The group read from `environ` (the process environment by default); ConfigError names a bad variable."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field, variable in zip(dataclasses.fields(cls), cls.variables()):  # type: ignore[arg-type]
            raw = environ.get(variable.name, "")
            if raw != "":
                values[field.name] = variable.parse(raw)
            elif variable.required:
                raise ConfigError(f"environment variable {variable.name} is required")
        return cls(**values)


def settings_group(cls: type[G]) -> type[G]:
    """A frozen, keyword-only dataclass registered in the table."""
    return dataclass(frozen=True, kw_only=True)(cls)


# --- Backing services ---------------------------------------------------------------------------


@settings_group
class DatabaseSettings(Group):
    database_url: str = env("DATABASE_URL", "PostgreSQL (or TimescaleDB) connection URL", secret=True)
    db_pool_max: int = env("DB_POOL_MAX", "most database connections a function process keeps", 16)


# Every connection of a function's pool has a statement_timeout and a lock_timeout (libpq options), so no
# statement runs or waits for a lock without end; each function has its own pair (0 turns one off).


@settings_group
class AuthDatabaseTimeouts(Group):
    statement_timeout_s: float = env("AUTH_DB_STATEMENT_TIMEOUT_S", "longest statement of auth (seconds)", 5.0)
    lock_timeout_s: float = env("AUTH_DB_LOCK_TIMEOUT_S", "longest wait for a lock in auth (seconds)", 2.0)


@settings_group
class IngestDatabaseTimeouts(Group):
    statement_timeout_s: float = env("INGEST_DB_STATEMENT_TIMEOUT_S", "longest statement of ingest (seconds)", 5.0)
    lock_timeout_s: float = env("INGEST_DB_LOCK_TIMEOUT_S", "longest wait for a lock in ingest (seconds)", 2.0)


@settings_group
class AnalyticsDatabaseTimeouts(Group):
    statement_timeout_s: float = env(
        "ANALYTICS_DB_STATEMENT_TIMEOUT_S", "longest query of analytics (seconds; past it: 503 with Retry-After)", 5.0
    )
    lock_timeout_s: float = env("ANALYTICS_DB_LOCK_TIMEOUT_S", "longest wait for a lock in analytics (seconds)", 2.0)


@settings_group
class ProcessDatabaseTimeouts(Group):
    statement_timeout_s: float = env(
        "PROCESS_DB_STATEMENT_TIMEOUT_S",
        "longest statement of process (seconds): above the COPY of the largest chunk and the move into"
        " telemetry_data; a timeout counts as an unexpected failure of the batch",
        120.0,
    )
    lock_timeout_s: float = env("PROCESS_DB_LOCK_TIMEOUT_S", "longest wait for a lock in process (seconds)", 10.0)


@settings_group
class RetentionDatabaseTimeouts(Group):
    statement_timeout_s: float = env(
        "RETENTION_DB_STATEMENT_TIMEOUT_S", "longest statement of retention (seconds; an aggregate refresh)", 600.0
    )
    lock_timeout_s: float = env(
        "RETENTION_DB_LOCK_TIMEOUT_S", "longest wait for a lock in retention's refresh and ledger prune (seconds)", 60.0
    )
    partition_lock_timeout_s: float = env(
        "RETENTION_PARTITION_LOCK_TIMEOUT_S",
        "longest wait for the lock of a partition's creation, detach or drop (seconds); past it the step is left"
        " to the next run instead of queueing in front of readers",
        1.0,
    )


@settings_group
class AlertsDatabaseTimeouts(Group):
    statement_timeout_s: float = env(
        "ALERTS_DB_STATEMENT_TIMEOUT_S",
        "longest statement of alerts (seconds): an API query, or one step of a batch's evaluation; past it 503",
        30.0,
    )
    lock_timeout_s: float = env("ALERTS_DB_LOCK_TIMEOUT_S", "longest wait for a lock in alerts (seconds)", 5.0)


@settings_group
class AdminDatabaseTimeouts(Group):
    statement_timeout_s: float = env("ADMIN_DB_STATEMENT_TIMEOUT_S", "longest statement of admin (seconds)", 5.0)
    lock_timeout_s: float = env("ADMIN_DB_LOCK_TIMEOUT_S", "longest wait for a lock in admin (seconds)", 2.0)


@settings_group
class MigrationSettings(Group):
    db_mode: str = env(
        "DB_MODE",
        "schema of `esm migrate`: auto (TimescaleDB when the extension is available), postgres or timescaledb",
        "auto",
        choices=("auto", "postgres", "timescaledb"),
    )


@settings_group
class RedisSettings(Group):
    redis_url: str = env(
        "REDIS_URL",
        "Redis connection URL (rate-limit buckets, decompression budgets, the copy of each account's state)",
        secret=True,
    )


@settings_group
class KafkaSettings(Group):
    kafka_bootstrap_servers: str = env("KAFKA_BOOTSTRAP_SERVERS", "Kafka brokers, comma-separated")
    kafka_topic_raw: str = env("KAFKA_TOPIC_RAW", "topic of the claim checks", "telemetry.raw")
    kafka_topic_dlq: str = env(
        "KAFKA_TOPIC_DLQ", "dead-letter topic of claim checks that failed for good", "telemetry.dlq"
    )


@settings_group
class ObjectStoreSettings(Group):
    s3_endpoint_url: str = env("S3_ENDPOINT_URL", "any S3-compatible object store")
    s3_access_key_id: str = env("S3_ACCESS_KEY_ID", "object store access key", secret=True)
    s3_secret_access_key: str = env("S3_SECRET_ACCESS_KEY", "object store secret key", secret=True)
    s3_bucket: str = env("S3_BUCKET", "bucket of the raw uploads", "telemetry-raw")
    s3_region: str = env("S3_REGION", "object store region", "us-east-1")


@settings_group
class BackendSettings(Group):
    backend_timeout_s: float = env(
        "BACKEND_TIMEOUT_S",
        "timeout of each object-store, Kafka and Redis call made while answering a request (seconds)",
        5.0,
    )


# --- Identity -------------------------------------------------------------------------------------


@settings_group
class TokenSettings(Group):
    jwt_secret: str = env(
        "JWT_SECRET",
        "HS256 key of access and refresh tokens (the local stack generates one into .local/secrets)",
        secret=True,
    )
    jwt_issuer: str = env("JWT_ISSUER", "issuer (iss claim) of the tokens", "easysmart")
    jwt_audience: str = env("JWT_AUDIENCE", "audience (aud claim) of the tokens", "easysmart-api")
    access_token_ttl_s: int = env("ACCESS_TOKEN_TTL_S", "lifetime of an access token (seconds)", 15 * 60)
    user_refresh_ttl_s: int = env("USER_REFRESH_TTL_S", "lifetime of a user's refresh token (seconds)", 7 * DAY_SECONDS)
    device_refresh_ttl_s: int = env(
        "DEVICE_REFRESH_TTL_S", "lifetime of a device's refresh token (seconds)", 30 * DAY_SECONDS
    )


@settings_group
class LoginSettings(Group):
    login_max_failures: int = env(
        "LOGIN_MAX_FAILURES",
        "consecutive failed logins of one username from one client address before that pair is locked",
        5,
    )
    login_lockout_s: int = env(
        "LOGIN_LOCKOUT_S", "how long such a lock lasts (seconds); older failure counts are pruned", 30 * 60
    )
    login_username_max_failures: int = env(
        "LOGIN_USERNAME_MAX_FAILURES",
        "failed logins of one username from any address after which each further failure makes the next attempt"
        " wait (1 s, doubling)",
        10,
    )
    login_throttle_max_s: int = env("LOGIN_THROTTLE_MAX_S", "longest such wait (seconds)", 30)
    login_ratelimit_per_minute: int = env(
        "LOGIN_RATELIMIT_PER_MINUTE", "login attempts per minute per client address (Redis)", 60
    )


@settings_group
class ProxySettings(Group):
    front_proxy_secret: str = env(
        "FRONT_PROXY_SECRET",
        "shared secret the front proxy sends in X-ESM-Proxy-Secret: only a request carrying it has its X-Real-IP"
        " believed (at least 32 bytes; unset: the client address is always the peer's; the local stack generates"
        " one into .local/secrets)",
        "",
        secret=True,
    )


@settings_group
class TenantSettings(Group):
    default_timezone: str = env(
        "DEFAULT_TIMEZONE",
        "IANA zone of new tenants unless given (`esm tenant create`); naive client times are read in the tenant's zone",
        "America/Sao_Paulo",
    )


@settings_group
class ClaimSigningSettings(Group):
    claim_signing_key: str = env(
        "CLAIM_SIGNING_KEY",
        "HMAC-SHA256 key (at least 32 bytes) ingest signs claim checks with and process verifies them with"
        " (the local stack generates one into .local/secrets)",
        secret=True,
    )
    claim_signing_key_id: str = env(
        "CLAIM_SIGNING_KEY_ID", "id of CLAIM_SIGNING_KEY, carried in each claim check; give a new key a new id", "k1"
    )
    claim_signing_retired_keys: tuple[str, ...] = env(
        "CLAIM_SIGNING_RETIRED_KEYS",
        "keys that only verify, as id:key pairs: a replaced key, kept at least as long as the dead-letter topic"
        " keeps records (DLQ_RETENTION_DAYS) so a replay verifies; a new key, on process, before ingest signs with it",
        (),
        secret=True,
    )


# --- Uploads and their processing -----------------------------------------------------------------


@settings_group
class UploadLimits(Group):
    ingest_max_body_bytes: int = env("INGEST_MAX_BODY_BYTES", "largest upload as sent (413 above)", 10 * MiB)
    ingest_max_decompressed_bytes: int = env(
        "INGEST_MAX_DECOMPRESSED_BYTES", "largest upload decompressed (413 above; uploads compress ~50:1)", 1024 * MiB
    )
    ingest_sync_window_bytes: int = env(
        "INGEST_SYNC_WINDOW_BYTES", "how much of the decompressed upload ingest parses before answering", 4 * MiB
    )
    ingest_max_whitespace_run_bytes: int = env(
        "INGEST_MAX_WHITESPACE_RUN_BYTES",
        "longest run of whitespace in an upload's JSON (ingest 413 in its window, process fails the batch);"
        " real uploads have none longer than an indentation",
        4096,
    )
    # A day-long backlog in the client's shape (24 sensors every 10 s, microsecond timestamps, door states and
    # extras constant) compresses 60:1 compact and up to 86:1 indented (gzip -9; bench/backlog_ratio.py), real
    # uploads 25:1 to 130:1. A refused real backlog is resent forever, hence the wide margin.
    ingest_max_decompression_ratio: float = env(
        "INGEST_MAX_DECOMPRESSION_RATIO",
        "most decompressed bytes per byte sent, checked past INGEST_RATIO_FLOOR_BYTES (ingest 413, process fails)",
        500.0,
    )
    ingest_ratio_floor_bytes: int = env(
        "INGEST_RATIO_FLOOR_BYTES",
        "decompressed bytes after which the ratio is checked (small uploads vary; below the window, so ingest"
        " checks it)",
        MiB,
    )
    # A shop's installation has tens of sensors. The bounds keep one upload's telemetry.stored event (~200 bytes a
    # sensor, ~80 an equipment) far under the 16 MiB Kafka takes: a larger one would stop the outbox for everyone.
    upload_max_sensors: int = env(
        "UPLOAD_MAX_SENSORS", "most sensors with readings stored one upload may carry (process fails the batch)", 10_000
    )
    upload_max_equipment: int = env(
        "UPLOAD_MAX_EQUIPMENT", "most equipment items one upload may carry (process fails the batch)", 10_000
    )
    # That backlog is 119 MiB of JSON a day: the budget takes a whole raw retention (30 days) of it in an hour.
    ingest_device_decompressed_bytes_per_hour: int = env(
        "INGEST_DEVICE_DECOMPRESSED_BYTES_PER_HOUR",
        "decompressed bytes a device account's uploads may cost per hour, ingest's and process's"
        " (Redis; ingest 429 once spent; 0: no budget)",
        4096 * MiB,
    )


@settings_group
class RateLimits(Group):
    ratelimit_device_per_minute: int = env("RATELIMIT_DEVICE_PER_MINUTE", "uploads per minute per device account", 120)
    ratelimit_address_per_minute: int = env(
        "RATELIMIT_ADDRESS_PER_MINUTE", "uploads per minute per client address", 1200
    )


@settings_group
class ProcessSettings(Group):
    process_parse_in_one_go_bytes: int = env(
        "PROCESS_PARSE_IN_ONE_GO_BYTES",
        "uploads up to this size (decompressed) are parsed in one go; larger ones stream",
        64 * MiB,
    )
    process_max_memory_bytes: int = env(
        "PROCESS_MAX_MEMORY_BYTES", "memory process may spend on uploads parsed in one go (others stream)", 512 * MiB
    )
    process_chunk_readings: int = env(
        "PROCESS_CHUNK_READINGS", "readings per COPY chunk handed to the database thread", 20000
    )
    process_delete_blob_after_commit: bool = env(
        "PROCESS_DELETE_BLOB_AFTER_COMMIT", "delete an upload's blob once its readings are stored", False
    )
    future_tolerance_s: int = env(
        "FUTURE_TOLERANCE_S", "readings further in the future are rejected (seconds)", DAY_SECONDS
    )


@settings_group
class RetentionSettings(Group):
    raw_retention_days: int = env(
        "RAW_RETENTION_DAYS", "raw readings kept (days); older ones are rejected on arrival and expired", 30
    )
    blob_retention_days: int = env(
        "BLOB_RETENTION_DAYS",
        "uploads kept in the object store (days); an identical upload within it is not stored again",
        7,
    )
    dlq_retention_days: int = env(
        "DLQ_RETENTION_DAYS",
        "how long the dead-letter topic keeps claim checks (days; its retention.ms): the blob of a batch that is"
        " not done is kept that long, so `esm dlq replay` finds it",
        30,
    )


@settings_group
class AuditSettings(Group):
    audit_retention_days: int = env(
        "AUDIT_RETENTION_DAYS", "audit log rows kept (days); older ones are pruned by retention", 400
    )


@settings_group
class AggregateSettings(Group):
    aggregate_timezone: str = env(
        "AGGREGATE_TIMEZONE",
        "daily buckets are days in this zone (hourly buckets are"
        " UTC hours); changing it rebuilds the daily buckets whose raw data is still kept,"
        " older ones stay as they were",
        "America/Sao_Paulo",
    )


@settings_group
class AnalyticsCacheSettings(Group):
    analytics_cache_ttl_s: int = env(
        "ANALYTICS_CACHE_TTL_S",
        "the materialised part of a history answer is kept in Redis this long (seconds; a refresh that rewrites"
        " past buckets makes every kept one unused at once); 0: no cache",
        900,
    )
    analytics_cache_max_entry_bytes: int = env(
        "ANALYTICS_CACHE_MAX_ENTRY_BYTES", "answers larger than this are not kept (bytes)", 4 * MiB
    )
    analytics_cache_retry_after_s: float = env(
        "ANALYTICS_CACHE_RETRY_AFTER_S",
        "after a Redis error analytics answers without the cache this long before trying Redis again (seconds)",
        10.0,
    )


# --- Alerts ---------------------------------------------------------------------------------------


@settings_group
class AlertSettings(Group):
    alert_silence_min_s: int = env(
        "ALERT_SILENCE_MIN_S",
        "an equipment is silent after at least this long without an upload (seconds), and a gap this long in a"
        " sensor's readings ends a threshold run",
        15 * 60,
    )
    alert_silence_cadence_factor: float = env(
        "ALERT_SILENCE_CADENCE_FACTOR",
        "or after this many times the median gap between its recent uploads, when that is longer",
        3.0,
    )
    alert_silence_uploads_kept: int = env(
        "ALERT_SILENCE_UPLOADS_KEPT", "recent upload times kept per equipment to learn its cadence", 20
    )
    alert_max_processing_lag_s: int = env(
        "ALERT_MAX_PROCESSING_LAG_S",
        "silence is not evaluated while a batch has waited longer than this to be processed, or a stored event"
        " to be published (seconds): a backend outage pages no shop",
        5 * 60,
    )
    alert_late_after_s: int = env(
        "ALERT_LATE_AFTER_S",
        "an alert is marked late when its readings crossed the duration this long before the upload arrived (seconds)",
        10 * 60,
    )
    alert_flap_transitions: int = env(
        "ALERT_FLAP_TRANSITIONS",
        "an alert whose resolution would be this many transitions of its rule and sensor within"
        " ALERT_FLAP_WINDOW_S is flapping: it stays open until the readings stay inside that long",
        4,
    )
    alert_flap_window_s: int = env("ALERT_FLAP_WINDOW_S", "the window of flapping (seconds)", 30 * 60)
    alert_history_days: int = env(
        "ALERT_HISTORY_DAYS", "resolved alerts kept (days); older ones are pruned by the alerts' minute tick", 730
    )


# --- Notifications (notify) -----------------------------------------------------------------------


@settings_group
class NotifyDatabaseTimeouts(Group):
    statement_timeout_s: float = env("NOTIFY_DB_STATEMENT_TIMEOUT_S", "longest statement of notify (seconds)", 5.0)
    lock_timeout_s: float = env("NOTIFY_DB_LOCK_TIMEOUT_S", "longest wait for a lock in notify (seconds)", 2.0)


@settings_group
class NotifySettings(Group):
    notify_public_base_url: str = env(
        "NOTIFY_PUBLIC_BASE_URL",
        "public URL of the API, for the links in e-mails (alerts, recipient confirmation)",
        "http://127.0.0.1:8080",
    )
    notify_webhook_allow_loopback: bool = env(
        "NOTIFY_WEBHOOK_ALLOW_LOOPBACK",
        "let webhooks call loopback addresses (the local stack and its tests receive their own webhooks);"
        " never in production",
        False,
    )
    notify_webhook_allowed_networks: tuple[str, ...] = env(
        "NOTIFY_WEBHOOK_ALLOWED_NETWORKS",
        "networks (CIDR) webhooks may call although they are not public, e.g. a relay inside the cluster",
        (),
    )
    notify_webhook_timeout_s: float = env(
        "NOTIFY_WEBHOOK_TIMEOUT_S", "longest connect and longest read of one webhook call (seconds)", 5.0
    )
    notify_inline_budget_s: float = env(
        "NOTIFY_INLINE_BUDGET_S",
        "how long the handler of an alert event spends trying its deliveries before answering (seconds);"
        " the rest is left to the minute tick",
        3.0,
    )
    notify_backoff_base_s: int = env(
        "NOTIFY_BACKOFF_BASE_S", "delay before a failed delivery's first retry (seconds), doubled per attempt", 30
    )
    notify_backoff_max_s: int = env("NOTIFY_BACKOFF_MAX_S", "longest delay between retries (seconds)", 3600)
    notify_retry_window_s: int = env(
        "NOTIFY_RETRY_WINDOW_S",
        "a delivery not done this long after its event is marked failed (seconds)",
        2 * DAY_SECONDS,
    )
    notify_tick_max_channels: int = env(
        "NOTIFY_TICK_MAX_CHANNELS",
        "most channels one minute tick delivers to (those waiting longest first; the rest wait for the next tick)",
        200,
    )
    notify_channel_max_per_tick: int = env(
        "NOTIFY_CHANNEL_MAX_PER_TICK", "most deliveries one tick attempts for one channel", 50
    )
    notify_tick_budget_s: float = env(
        "NOTIFY_TICK_BUDGET_S", "after this long a tick starts no new delivery (seconds)", 45.0
    )
    notify_tick_workers: int = env("NOTIFY_TICK_WORKERS", "channels a tick delivers to at the same time", 4)
    notify_channel_max_per_window: int = env(
        "NOTIFY_CHANNEL_MAX_PER_WINDOW",
        "messages a channel gets per NOTIFY_CHANNEL_WINDOW_S; past it each tick folds what is due into one digest",
        10,
    )
    notify_channel_window_s: int = env(
        "NOTIFY_CHANNEL_WINDOW_S", "the window of NOTIFY_CHANNEL_MAX_PER_WINDOW (seconds)", 600
    )
    notify_critical_reminder_s: int = env(
        "NOTIFY_CRITICAL_REMINDER_S",
        "an unacknowledged critical alert is notified again after this long, and again each time (seconds; 0: never)",
        3600,
    )
    notify_email_per_tenant_per_hour: int = env(
        "NOTIFY_EMAIL_PER_TENANT_PER_HOUR",
        "e-mails (alerts and confirmations) a tenant may send per hour; past it they wait",
        120,
    )
    notify_confirm_ttl_s: int = env(
        "NOTIFY_CONFIRM_TTL_S", "how long an e-mail recipient's confirmation link works (seconds)", 7 * DAY_SECONDS
    )


@settings_group
class SmtpSettings(Group):
    smtp_host: str = env("SMTP_HOST", "SMTP server of e-mail notifications (unset: e-mail channels fail)", "")
    smtp_port: int = env("SMTP_PORT", "its port (587 for STARTTLS, 465 for TLS)", 587)
    smtp_security: str = env(
        "SMTP_SECURITY",
        "starttls (upgrade after connecting), tls (TLS from the start) or none (local test servers only)",
        "starttls",
        choices=("starttls", "tls", "none"),
    )
    smtp_username: str = env("SMTP_USERNAME", "SMTP login (unset: none)", "")
    smtp_password: str = env("SMTP_PASSWORD", "its password", "", secret=True)
    smtp_from: str = env("SMTP_FROM", "From: of notifications", "Easy Smart Monitor <alerts@easysmart.invalid>")
    smtp_timeout_s: float = env("SMTP_TIMEOUT_S", "timeout of each SMTP operation (seconds)", 10.0)


# --- The live stream of alert transitions (stream) -----------------------------------------------


@settings_group
class StreamDatabaseTimeouts(Group):
    statement_timeout_s: float = env(
        "STREAM_DB_STATEMENT_TIMEOUT_S", "longest statement of stream (seconds; the account-state check)", 5.0
    )
    lock_timeout_s: float = env("STREAM_DB_LOCK_TIMEOUT_S", "longest wait for a lock in stream (seconds)", 2.0)


@settings_group
class StreamSettings(Group):
    stream_ticket_ttl_s: int = env(
        "STREAM_TICKET_TTL_S", "how long a stream ticket may be redeemed (seconds; each works once)", 60
    )
    stream_max_len: int = env(
        "STREAM_MAX_LEN",
        "transitions kept per tenant for resuming with Last-Event-ID (about: Redis trims whole nodes)",
        1000,
    )
    stream_window_s: int = env(
        "STREAM_WINDOW_S", "transitions older than this are dropped from a tenant's stream (seconds)", 3600
    )
    stream_dedup_ttl_s: int = env(
        "STREAM_DEDUP_TTL_S",
        "how long notify remembers an event id it added to a stream, so a redelivery is not added again (seconds)",
        2 * DAY_SECONDS,
    )
    stream_heartbeat_s: float = env(
        "STREAM_HEARTBEAT_S", "an idle stream sends a comment this often (seconds; at most 30)", 15.0
    )
    stream_max_lifetime_s: int = env(
        "STREAM_MAX_LIFETIME_S",
        "a stream ends after this long and the browser reconnects (seconds; below the platform's request timeout)",
        540,
    )
    stream_max_per_account: int = env("STREAM_MAX_PER_ACCOUNT", "open streams per user account (past it: 429)", 5)
    stream_max_per_tenant: int = env("STREAM_MAX_PER_TENANT", "open streams per tenant (past it: 429)", 50)
    stream_max_per_worker: int = env(
        "STREAM_MAX_PER_WORKER",
        "open streams per gunicorn worker (past it: 503); keep it below THREADS, which also serve the tickets",
        60,
    )


# --- Bridges (the local stack's stand-ins for Knative's KafkaSource and PingSource) --------------


@settings_group
class KafkaBridgeSettings(Group):
    sink_url: str = env("PROCESS_URL", "where the kafka-source bridge POSTs claim checks", "http://127.0.0.1:8083/")
    group_id: str = env("BRIDGE_GROUP_ID", "consumer group of the kafka-source bridge", "process-bridge")
    backoff_base_s: float = env("BRIDGE_BACKOFF_BASE_S", "first retry delay (seconds), doubled per attempt", 0.5)
    backoff_max_s: float = env("BRIDGE_BACKOFF_MAX_S", "longest retry delay (seconds)", 30.0)
    # A database outage of an hour must dead-letter nothing.
    retry_max_elapsed_s: float = env(
        "BRIDGE_RETRY_MAX_ELAPSED_S", "retries stop and the record is dead-lettered after this long (seconds)", 5400.0
    )
    request_timeout_s: float = env("BRIDGE_REQUEST_TIMEOUT_S", "read timeout of one delivery (seconds)", 900.0)
    bridge_routes: str = env(
        "BRIDGE_ROUTES",
        "routes besides the claim checks' (KAFKA_TOPIC_RAW to PROCESS_URL): space-separated topic=url, each in the"
        " consumer group <topic>-bridge, dead-lettered to <topic>.dlq",
        "",
    )


@settings_group
class BridgeMetricsSettings(Group):
    host: str = env(
        "KAFKA_BRIDGE_METRICS_HOST",
        "address the kafka-source bridge serves /metrics on (0.0.0.0 in a pod, for the scraper)",
        "127.0.0.1",
    )
    port: int = env("KAFKA_BRIDGE_METRICS_PORT", "port of the kafka-source bridge's /metrics (0: not served)", 8091)


@settings_group
class PingSourceSettings(Group):
    retention_url: str = env("RETENTION_URL", "where the ping-source bridge POSTs its events", "http://127.0.0.1:8085/")
    retention_refresh_schedule: str = env(
        "RETENTION_REFRESH_SCHEDULE", "five-field cron (UTC): refresh the aggregates", "*/5 * * * *"
    )
    retention_expire_schedule: str = env(
        "RETENTION_EXPIRE_SCHEDULE", "five-field cron (UTC): expire old data (expiry refreshes first)", "17 3 * * *"
    )
    alerts_url: str = env("ALERTS_URL", "where the ping-source bridge sends the alerts tick (empty: none)", "")
    alerts_tick_schedule: str = env(
        "ALERTS_TICK_SCHEDULE", "five-field cron (UTC): the alerts function's tick (silence rules)", "* * * * *"
    )
    notify_url: str = env("NOTIFY_URL", "where the ping-source bridge sends the delivery job (empty: none)", "")
    notify_deliver_schedule: str = env(
        "NOTIFY_DELIVER_SCHEDULE", "five-field cron (UTC): the notify function's delivery job", "* * * * *"
    )


@settings_group
class OutboxRelaySettings(Group):
    outbox_relay_batch: int = env("OUTBOX_RELAY_BATCH", "most outbox rows the relay publishes per transaction", 500)
    outbox_relay_poll_s: float = env(
        "OUTBOX_RELAY_POLL_S", "how often the idle relay looks for unpublished outbox rows (seconds)", 0.2
    )
    outbox_relay_timeout_s: float = env(
        "OUTBOX_RELAY_TIMEOUT_S", "longest wait for Kafka to acknowledge a publish (seconds)", 30.0
    )
    outbox_keep_published_h: float = env(
        "OUTBOX_KEEP_PUBLISHED_H", "the relay deletes published outbox rows after this long (hours)", 24.0
    )


# --- The collector: figures that live outside a request (object store, database, disks) -----------


@settings_group
class CollectorDatabaseTimeouts(Group):
    statement_timeout_s: float = env(
        "COLLECTOR_DB_STATEMENT_TIMEOUT_S", "longest query of the collector (seconds; catalogue sizes, counts)", 5.0
    )
    lock_timeout_s: float = env(
        "COLLECTOR_DB_LOCK_TIMEOUT_S", "longest wait for a lock in the collector (seconds)", 1.0
    )


@settings_group
class CollectorSettings(Group):
    refresh_s: float = env(
        "COLLECTOR_REFRESH_S", "how often the collector reads the database and the watched filesystems (seconds)", 60.0
    )
    object_store_refresh_s: float = env(
        "COLLECTOR_OBJECT_STORE_REFRESH_S", "how often the collector lists the bucket (seconds)", 300.0
    )
    stuck_after_s: float = env(
        "COLLECTOR_STUCK_AFTER_S", "a batch still processing this long after it was received is stuck (seconds)", 600.0
    )
    watch_paths: tuple[str, ...] = env(
        "COLLECTOR_WATCH_PATHS",
        "filesystems whose free space the collector reports, as name=path pairs (the local stack: state=.local)",
        (),
    )


# --- Logging and the command line -----------------------------------------------------------------


@settings_group
class LoggingSettings(Group):
    log_level: str = env(
        "LOG_LEVEL", "level of the JSON logs", "INFO", choices=("debug", "info", "warning", "error", "critical")
    )


@settings_group
class TracingSettings(Group):
    otel_exporter_otlp_endpoint: str = env(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "base URL of an OpenTelemetry collector's OTLP/HTTP receiver (spans go to <url>/v1/traces); empty: tracing off",
        "",
    )
    trace_sample_ratio: float = env(
        "TRACE_SAMPLE_RATIO",
        "share of requests traced, 0 to 1, decided where a request enters (a client's sampled flag is not taken);"
        " the spans downstream of it (the claim check, the bridge, process) follow that decision",
        0.1,
    )


@settings_group
class DemoSettings(Group):
    esm_base_url: str = env("ESM_BASE_URL", "public URL `esm demo` uploads through", "http://127.0.0.1:8080")
    demo_tenant: str = env("DEMO_TENANT", "tenant of `esm seed-demo`", "demo")
    demo_device_user: str = env("DEMO_DEVICE_USER", "device account of the demo", "demo-device")
    demo_device_password: str = env("DEMO_DEVICE_PASSWORD", "its password", "demo-device-pass", secret=True)
    demo_admin_user: str = env("DEMO_ADMIN_USER", "user account of the demo", "demo-admin")
    demo_admin_password: str = env("DEMO_ADMIN_PASSWORD", "its password", "demo-admin-pass", secret=True)


@settings_group
class AdminSettings(Group):
    public_base_url: str = env(
        "PUBLIC_BASE_URL",
        "the URL Home Assistant installations reach the API at (the front door), answered as the integration's API"
        " URL when a device is created; never taken from a request's Host header",
        "http://127.0.0.1:8080",
    )
    device_rotation_max_grace_s: int = env(
        "DEVICE_ROTATION_MAX_GRACE_S",
        "the longest grace period a device password rotation may ask for (s), during which the old password works",
        DAY_SECONDS,
    )


@settings_group
class AccountSettings(Group):
    esm_password: str = env(
        "ESM_PASSWORD",
        "password of `esm account create` when --password is not given (otherwise a prompt)",
        "",
        secret=True,
    )


# Read by the server every function runs in (functions-framework's gunicorn, prometheus_client),
# not by a group: the manifests may set them on any function.
SERVER_VARIABLES = (
    Variable("WORKERS", "server", "integer", 1, "gunicorn worker processes (functions-framework)"),
    Variable("THREADS", "server", "integer", 8, "threads per worker (functions-framework)"),
    Variable(
        "PROMETHEUS_MULTIPROC_DIR",
        "server",
        "string",
        "",
        "an empty directory where the workers keep their"
        " metrics, summed by /metrics (prometheus_client); unset: each worker answers for itself. The images set"
        " /tmp/esm-metrics, the local stack .local/run/metrics/<function>",
    ),
)


def variables() -> list[Variable]:
    """The whole table: every group's variables, then the server's."""
    return [variable for group in Group.GROUPS for variable in group.variables()] + list(SERVER_VARIABLES)
