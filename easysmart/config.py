"""Configuration from environment variables (12-factor); see .env.example."""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

MiB = 1024 * 1024
DAY_SECONDS = 86400


class ConfigError(RuntimeError):
    """A required environment variable is missing or malformed."""


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name)
    if value is None or value == "":
        if default is None:
            raise ConfigError(f"environment variable {name} is required")
        return default
    return value


def _int(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer, got {raw!r}") from None


def _float(name: str, default: float) -> float:
    raw = _env(name, str(default))
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be a number, got {raw!r}") from None


def _bool(name: str, default: bool) -> bool:
    return _env(name, "true" if default else "false").strip().lower() in {"1", "true", "yes", "on"}


def _list(name: str, default: str = "") -> tuple[str, ...]:
    return tuple(part.strip() for part in _env(name, default or " ").split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    kafka_bootstrap_servers: str
    s3_endpoint_url: str
    s3_access_key_id: str
    s3_secret_access_key: str
    jwt_secret: str
    s3_bucket: str = "telemetry-raw"
    s3_region: str = "us-east-1"
    kafka_topic_raw: str = "telemetry.raw"
    kafka_topic_dlq: str = "telemetry.dlq"
    default_timezone: str = "America/Sao_Paulo"
    jwt_issuer: str = "easysmart"
    jwt_audience: str = "easysmart-api"
    access_token_ttl_s: int = 15 * 60
    user_refresh_ttl_s: int = 7 * DAY_SECONDS
    device_refresh_ttl_s: int = 30 * DAY_SECONDS
    login_max_failures: int = 5
    login_lockout_s: int = 30 * 60
    ingest_max_body_bytes: int = 10 * MiB
    ingest_max_decompressed_bytes: int = 1024 * MiB
    ingest_sync_window_bytes: int = 4 * MiB
    backend_timeout_s: float = 5.0
    ratelimit_device_per_minute: int = 120
    ratelimit_address_per_minute: int = 1200
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    process_parse_in_one_go_bytes: int = 64 * MiB
    process_max_memory_bytes: int = 512 * MiB
    process_chunk_readings: int = 20000
    process_delete_blob_after_commit: bool = False
    raw_retention_days: int = 30
    blob_retention_days: int = 7
    future_tolerance_s: int = DAY_SECONDS
    db_mode: str = "auto"
    db_pool_max: int = 16
    aggregate_timezone: str = "America/Sao_Paulo"
    retention_refresh_schedule: str = "*/5 * * * *"
    retention_expire_schedule: str = "17 3 * * *"
    retention_url: str = "http://127.0.0.1:8085/"

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            database_url=_env("DATABASE_URL"),
            redis_url=_env("REDIS_URL"),
            kafka_bootstrap_servers=_env("KAFKA_BOOTSTRAP_SERVERS"),
            s3_endpoint_url=_env("S3_ENDPOINT_URL"),
            s3_access_key_id=_env("S3_ACCESS_KEY_ID"),
            s3_secret_access_key=_env("S3_SECRET_ACCESS_KEY"),
            jwt_secret=_env("JWT_SECRET"),
            s3_bucket=_env("S3_BUCKET", "telemetry-raw"),
            s3_region=_env("S3_REGION", "us-east-1"),
            kafka_topic_raw=_env("KAFKA_TOPIC_RAW", "telemetry.raw"),
            kafka_topic_dlq=_env("KAFKA_TOPIC_DLQ", "telemetry.dlq"),
            default_timezone=_env("DEFAULT_TIMEZONE", "America/Sao_Paulo"),
            jwt_issuer=_env("JWT_ISSUER", "easysmart"),
            jwt_audience=_env("JWT_AUDIENCE", "easysmart-api"),
            access_token_ttl_s=_int("ACCESS_TOKEN_TTL_S", 15 * 60),
            user_refresh_ttl_s=_int("USER_REFRESH_TTL_S", 7 * DAY_SECONDS),
            device_refresh_ttl_s=_int("DEVICE_REFRESH_TTL_S", 30 * DAY_SECONDS),
            login_max_failures=_int("LOGIN_MAX_FAILURES", 5),
            login_lockout_s=_int("LOGIN_LOCKOUT_S", 30 * 60),
            ingest_max_body_bytes=_int("INGEST_MAX_BODY_BYTES", 10 * MiB),
            ingest_max_decompressed_bytes=_int("INGEST_MAX_DECOMPRESSED_BYTES", 1024 * MiB),
            ingest_sync_window_bytes=_int("INGEST_SYNC_WINDOW_BYTES", 4 * MiB),
            backend_timeout_s=_float("BACKEND_TIMEOUT_S", 5.0),
            ratelimit_device_per_minute=_int("RATELIMIT_DEVICE_PER_MINUTE", 120),
            ratelimit_address_per_minute=_int("RATELIMIT_ADDRESS_PER_MINUTE", 1200),
            trusted_proxies=_list("TRUSTED_PROXIES", "127.0.0.1,::1"),
            process_parse_in_one_go_bytes=_int("PROCESS_PARSE_IN_ONE_GO_BYTES", 64 * MiB),
            process_max_memory_bytes=_int("PROCESS_MAX_MEMORY_BYTES", 512 * MiB),
            process_chunk_readings=_int("PROCESS_CHUNK_READINGS", 20000),
            process_delete_blob_after_commit=_bool("PROCESS_DELETE_BLOB_AFTER_COMMIT", False),
            raw_retention_days=_int("RAW_RETENTION_DAYS", 30),
            blob_retention_days=_int("BLOB_RETENTION_DAYS", 7),
            future_tolerance_s=_int("FUTURE_TOLERANCE_S", DAY_SECONDS),
            db_mode=_env("DB_MODE", "auto"),
            db_pool_max=_int("DB_POOL_MAX", 16),
            aggregate_timezone=_env("AGGREGATE_TIMEZONE", "America/Sao_Paulo"),
            retention_refresh_schedule=_env("RETENTION_REFRESH_SCHEDULE", "*/5 * * * *"),
            retention_expire_schedule=_env("RETENTION_EXPIRE_SCHEDULE", "17 3 * * *"),
            retention_url=_env("RETENTION_URL", "http://127.0.0.1:8085/"),
        )


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings.from_env()
