"""Claim-check signatures: what they cover, what breaks them, which keys verify them, which keys start."""

import dataclasses
import uuid

import pytest
from support.claims import CLAIM, RETIRED_KEYRING, TEST_CLAIM_SETTINGS, TEST_KEYRING, signed

from easysmart.claimsig import SIGNED_FIELDS, ClaimKeyring, ClaimNotAuthenticError, blob_metadata, canonical_bytes
from easysmart.config import ClaimSigningSettings, ConfigError
from easysmart.events import from_cloudevent, from_http_request, from_kafka, to_cloudevent, to_http, to_kafka

OTHER_KEY = "another-claim-signing-key-" + "o" * 40


def changed(value: object) -> object:
    """Another value of the same type, as a tamperer would write it."""
    if isinstance(value, int):
        return value + 1
    if value is None:
        return 7
    try:
        return str(uuid.UUID(int=uuid.UUID(value).int ^ 1))
    except ValueError:
        return value + "x"


@pytest.mark.parametrize("field", SIGNED_FIELDS)
def test_changing_any_signed_field_breaks_the_signature(field):
    tampered = dataclasses.replace(CLAIM, **{field: changed(getattr(CLAIM, field))})

    assert canonical_bytes(tampered) != canonical_bytes(CLAIM)
    with pytest.raises(ClaimNotAuthenticError, match="signature does not verify"):
        TEST_KEYRING.verify(tampered)


def test_the_signed_fields_are_every_field_ingest_sets_but_the_transport_attribute():
    unsigned = {f.name for f in dataclasses.fields(CLAIM)} - set(SIGNED_FIELDS)
    assert unsigned == {"traceparent", "signing_key_id", "signature"}


def test_a_rewritten_traceparent_keeps_the_signature_valid():
    rewritten = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    TEST_KEYRING.verify(dataclasses.replace(CLAIM, traceparent=rewritten))
    TEST_KEYRING.verify(dataclasses.replace(CLAIM, traceparent=None))


def test_the_signature_survives_kafka_http_and_a_plain_post():
    TEST_KEYRING.verify(from_cloudevent(from_kafka(dict(to_kafka(CLAIM).headers), None, to_kafka(CLAIM).value)))
    headers, body = to_http(to_cloudevent(CLAIM))
    TEST_KEYRING.verify(from_cloudevent(from_http_request(headers, body)))
    TEST_KEYRING.verify(from_cloudevent(from_http_request({"Content-Type": "application/json"}, body)))


@pytest.mark.parametrize(
    "forge, reason",
    [
        (lambda claim: dataclasses.replace(claim, signing_key_id=None, signature=None), "not signed"),
        (lambda claim: dataclasses.replace(claim, signature=None), "not signed"),
        (lambda claim: dataclasses.replace(claim, signature="0" * 64), "signature does not verify"),
        (lambda claim: dataclasses.replace(claim, signature="é" * 64), "signature does not verify"),
        (
            lambda claim: ClaimKeyring.from_settings(
                ClaimSigningSettings(claim_signing_key=OTHER_KEY, claim_signing_key_id="attacker")
            ).sign(claim),
            "unknown key id 'attacker'",
        ),
        (
            lambda claim: ClaimKeyring.from_settings(
                ClaimSigningSettings(claim_signing_key=OTHER_KEY, claim_signing_key_id="test-2")
            ).sign(claim),
            "signature does not verify",
        ),
    ],
    ids=["unsigned", "no signature", "zero signature", "non-ascii signature", "unknown key", "wrong key, known id"],
)
def test_a_forged_claim_check_does_not_verify(forge, reason):
    with pytest.raises(ClaimNotAuthenticError, match=reason) as refused:
        TEST_KEYRING.verify(forge(CLAIM))
    assert refused.value.status == 422


def test_a_retired_key_still_verifies_and_signing_uses_the_current_one():
    old = RETIRED_KEYRING.sign(CLAIM)
    assert old.signing_key_id == "test-1"
    TEST_KEYRING.verify(old)
    assert signed(old).signing_key_id == "test-2"
    # Once the retired key is dropped from the configuration, what it signed no longer verifies.
    current_only = ClaimKeyring.from_settings(dataclasses.replace(TEST_CLAIM_SETTINGS, claim_signing_retired_keys=()))
    with pytest.raises(ClaimNotAuthenticError, match="unknown key id 'test-1'"):
        current_only.verify(old)


@pytest.mark.parametrize(
    "settings, message",
    [
        (ClaimSigningSettings(claim_signing_key="short"), "at least 32 bytes"),
        (ClaimSigningSettings(claim_signing_key="change-me-to-another-32-random-bytes-please"), "published"),
        (ClaimSigningSettings(claim_signing_key=OTHER_KEY, claim_signing_key_id=" "), "CLAIM_SIGNING_KEY_ID"),
        (ClaimSigningSettings(claim_signing_key=OTHER_KEY, claim_signing_retired_keys=("k0",)), "id:key pairs"),
        (ClaimSigningSettings(claim_signing_key=OTHER_KEY, claim_signing_retired_keys=("k0:short",)), "32 bytes"),
        (
            ClaimSigningSettings(claim_signing_key=OTHER_KEY, claim_signing_retired_keys=(f"k1:{OTHER_KEY}",)),
            "given twice",
        ),
    ],
    ids=["short", "published", "empty id", "no id", "short retired", "retired id reused"],
)
def test_a_weak_or_malformed_key_refuses_to_start(settings, message):
    with pytest.raises(ConfigError, match=message):
        ClaimKeyring.from_settings(settings)


def test_the_keys_come_from_the_environment():
    keyring = ClaimKeyring.from_settings(
        ClaimSigningSettings.from_env(
            {
                "CLAIM_SIGNING_KEY": OTHER_KEY,
                "CLAIM_SIGNING_KEY_ID": "k2",
                "CLAIM_SIGNING_RETIRED_KEYS": f"k1:{'a' * 32}, k0:{'b' * 40}",
            }
        )
    )
    assert keyring.current_id == "k2" and set(keyring.keys) == {"k2", "k1", "k0"}
    with pytest.raises(ConfigError, match="CLAIM_SIGNING_KEY is required"):
        ClaimSigningSettings.from_env({})


def test_the_blob_metadata_names_the_claims_tenant_account_batch_and_digest():
    assert blob_metadata(CLAIM) == {
        "tenant-id": CLAIM.tenant_id,
        "account-id": CLAIM.account_id,
        "batch-id": CLAIM.batch_id,
        "sha256": CLAIM.sha256,
    }
