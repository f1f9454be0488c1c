"""The object store's client: its pool, and the timestamps of its answers."""

from datetime import datetime, timezone

from easysmart.config import ObjectStoreSettings
from easysmart.storage import _parse_timestamp, make_blob_store, make_s3_client

SETTINGS = ObjectStoreSettings(
    s3_endpoint_url="http://127.0.0.1:1", s3_access_key_id="key", s3_secret_access_key="secret"
)


def test_the_client_keeps_as_many_connections_as_it_is_asked_for():
    client = make_s3_client(SETTINGS, 5.0, max_connections=24)
    assert (client.meta.config.max_pool_connections, client.meta.config.read_timeout) == (24, 5.0)


def test_timestamps_parse_as_aware_utc_whether_http_dates_or_iso_8601():
    moment = datetime(2026, 12, 2, 2, 51, 14, tzinfo=timezone.utc)
    assert _parse_timestamp("Wed, 02 Dec 2026 02:51:14 GMT") == moment
    assert _parse_timestamp("2026-12-02T02:51:14.000Z") == moment


def test_the_blob_store_keeps_as_many_connections_as_it_is_asked_for_and_times_out_each_read():
    pool = make_blob_store(SETTINGS, 7.0, max_connections=24).client._pool
    assert (pool.pool.maxsize, pool.timeout.connect_timeout, pool.timeout.read_timeout) == (24, 7.0, 7.0)
