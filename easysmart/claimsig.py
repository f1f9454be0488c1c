"""Authenticated claim checks: ingest signs each one, process verifies it before it trusts it.

The signature is an HMAC-SHA256 over a canonical encoding of the fields ingest sets (SIGNED_FIELDS),
never over transport attributes such as traceparent, which the platform may rewrite. The key's id
and the signature travel as two data fields of the claim check (`signing_key_id`, `signature`), so
they survive every transport a claim check takes: Kafka, the KafkaSource, a dead-letter record and
its replay, a plain POST of the JSON. Process also holds the blob's metadata, which ingest writes
from the same claim, to the claim (blob_metadata). docs/architecture.md §3.2.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Mapping

import orjson

from easysmart.config import ClaimSigningSettings, ConfigError
from easysmart.errors import UnprocessableError
from easysmart.events import ClaimCheck

logger = logging.getLogger(__name__)

# Every field ingest sets: what locates the blob and whose it is (the ids, bucket, key, sha256, size,
# received_at), and what process and the ledger take from the claim (sizes, counts, device, request id).
SIGNED_FIELDS = (
    "batch_id",
    "tenant_id",
    "account_id",
    "bucket",
    "key",
    "sha256",
    "size_bytes",
    "received_at",
    "device",
    "decompressed_bytes",
    "content_encoding",
    "items",
    "readings",
    "request_id",
)
# A new encoding gets a new prefix, so a signature can never be read under another encoding.
_ENCODING_PREFIX = b"easysmart.claim-check.v1\n"

MIN_KEY_BYTES = 32
# Example values published with the repository: never accepted as a real key.
PUBLISHED_KEYS = frozenset({"change-me-to-another-32-random-bytes-please"})  # .env.example

# The blob metadata ingest writes and process checks against the claim check.
_METADATA_FIELDS = {"tenant-id": "tenant_id", "account-id": "account_id", "batch-id": "batch_id", "sha256": "sha256"}


class ClaimNotAuthenticError(UnprocessableError):
    """The claim check is not signed by a key process knows, or was changed after it was signed."""

    code = "claim_check_not_authentic"


def canonical_bytes(claim: ClaimCheck) -> bytes:
    """What the signature covers: the signed fields' values, in SIGNED_FIELDS order, as a JSON array."""
    return _ENCODING_PREFIX + orjson.dumps([getattr(claim, name) for name in SIGNED_FIELDS])


def blob_metadata(claim: ClaimCheck) -> dict[str, str]:
    """The object metadata ingest stores with the claim's blob and process requires of it."""
    return {name: getattr(claim, field) for name, field in _METADATA_FIELDS.items()}


def _key(key_id: str, text: str, variable: str) -> bytes:
    key = text.encode()
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"{variable}: key {key_id!r} must be at least {MIN_KEY_BYTES} bytes (e.g. head -c 48 /dev/urandom | base64)"
        )
    if text in PUBLISHED_KEYS:
        raise ConfigError(f"{variable}: key {key_id!r} is a published example value; generate one of your own")
    return key


@dataclass(frozen=True)
class ClaimKeyring:
    """The current signing key and the retired keys still accepted, by id."""

    current_id: str
    keys: Mapping[str, bytes]

    @classmethod
    def from_settings(cls, settings: ClaimSigningSettings) -> ClaimKeyring:
        """The keyring of the settings; ConfigError (the function refuses to start) for a short, published,
        duplicate or malformed key, as anyone holding a weak key could write into any tenant."""
        current_id = settings.claim_signing_key_id.strip()
        if not current_id or ":" in current_id:
            raise ConfigError("CLAIM_SIGNING_KEY_ID must be a non-empty id without ':'")
        keys = {current_id: _key(current_id, settings.claim_signing_key, "CLAIM_SIGNING_KEY")}
        for pair in settings.claim_signing_retired_keys:
            key_id, separator, text = pair.partition(":")
            key_id = key_id.strip()
            if not separator or not key_id:
                raise ConfigError("CLAIM_SIGNING_RETIRED_KEYS must be id:key pairs, comma-separated")
            if key_id in keys:
                raise ConfigError(f"CLAIM_SIGNING_RETIRED_KEYS: key id {key_id!r} is given twice")
            keys[key_id] = _key(key_id, text, "CLAIM_SIGNING_RETIRED_KEYS")
        return cls(current_id, keys)

    def sign(self, claim: ClaimCheck) -> ClaimCheck:
        """The claim check signed with the current key."""
        signature = _mac(self.keys[self.current_id], claim)
        return dataclasses.replace(claim, signing_key_id=self.current_id, signature=signature)

    def verify(self, claim: ClaimCheck) -> None:
        """Returns when a known key signed exactly these fields; ClaimNotAuthenticError says why not."""
        if not claim.signature or not claim.signing_key_id:
            raise ClaimNotAuthenticError("the claim check is not signed")
        key = self.keys.get(claim.signing_key_id)
        if key is None:
            raise ClaimNotAuthenticError(f"the claim check is signed with an unknown key id {claim.signing_key_id!r}")
        if not hmac.compare_digest(_mac(key, claim).encode(), claim.signature.encode()):
            raise ClaimNotAuthenticError(
                f"the claim check's signature does not verify (key id {claim.signing_key_id!r}):"
                " it was not signed by ingest or was changed since"
            )


def _mac(key: bytes, claim: ClaimCheck) -> str:
    return hmac.new(key, canonical_bytes(claim), hashlib.sha256).hexdigest()
