import gzip
import hashlib
import io
import uuid
from datetime import datetime, timezone

import orjson

from easysmart.bridges.outbox_relay import OutboxRow
from easysmart.claimsig import ClaimKeyring, blob_metadata
from easysmart.config import ClaimSigningSettings
from easysmart.events import ClaimCheck

# The tests' claim-signing keys: one current and one retired, as ingest and process are configured in tests.
TEST_SIGNING_KEY = "test-claim-signing-key-" + "c" * 40
TEST_RETIRED_KEY = "retired-claim-signing-key-" + "r" * 40
TEST_CLAIM_SETTINGS = ClaimSigningSettings(
    claim_signing_key=TEST_SIGNING_KEY,
    claim_signing_key_id="test-2",
    claim_signing_retired_keys=(f"test-1:{TEST_RETIRED_KEY}",),
)
TEST_KEYRING = ClaimKeyring.from_settings(TEST_CLAIM_SETTINGS)
# What signed claim checks before test-2: accepted by TEST_KEYRING as a retired key.
RETIRED_KEYRING = ClaimKeyring.from_settings(
    ClaimSigningSettings(claim_signing_key=TEST_RETIRED_KEY, claim_signing_key_id="test-1")
)


def signed(claim: ClaimCheck) -> ClaimCheck:
    """The claim check as ingest would have signed it in the tests."""
    return TEST_KEYRING.sign(claim)


TENANT_ID = "5a0f3c1e-0000-4000-8000-0000000000a1"
ACCOUNT_ID = "5a0f3c1e-0000-4000-8000-0000000000b1"
CLAIM = signed(
    ClaimCheck(
        "5a0f3c1e-0000-4000-8000-000000000001",
        TENANT_ID,
        ACCOUNT_ID,
        "dev",
        "telemetry-raw",
        "raw/k.json.gz",
        10,
        20,
        "ab" * 32,
        "gzip",
        1,
        2,
        "req-1",
        "2026-11-20T10:00:00+00:00",
        "00-abc-def-01",
    )
)


def stage(blobs, account, items, *, sha256: str | None = None, raw: bytes | None = None) -> ClaimCheck:
    """A blob of the items (or raw text) stored as ingest stores it, and its claim check signed as ingest signs it."""
    text = raw if raw is not None else orjson.dumps(items)
    body = gzip.compress(text)
    batch_id = str(uuid.uuid4())
    key = f"raw/test/{account.tenant_id}/{batch_id}.json.gz"
    claim = signed(
        ClaimCheck(
            batch_id,
            account.tenant_id,
            account.account_id,
            account.username,
            blobs.bucket,
            key,
            len(body),
            len(text),
            sha256 or hashlib.sha256(body).hexdigest(),
            "gzip",
            None,
            None,
            "test",
            datetime.now(timezone.utc).isoformat(),
        )
    )
    blobs.put(key, io.BytesIO(body), blob_metadata(claim))
    return claim


def stored_event_row() -> OutboxRow:
    """An outbox row of a telemetry.stored event, as the relay reads it."""
    return OutboxRow(
        7,
        "0b6c8f5e-8a3f-5a53-9a57-2f1f0c9e4d11",
        "telemetry.stored",
        "tenant-1",
        "com.easysmart.telemetry.stored",
        "/easysmart/process",
        "tenants/tenant-1/batches/b-1",
        {"batch_id": "b-1", "sensors": [{"sensor_id": 3, "count": 2}]},
        datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc),
    )
