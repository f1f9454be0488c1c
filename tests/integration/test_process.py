"""process against the real PostgreSQL and S3 server: parsing modes, idempotency, failures."""

import dataclasses
import uuid
from typing import Callable

import psycopg2.errors
import pytest
from support.claims import RETIRED_KEYRING, TEST_KEYRING, signed, stage
from support.samples import recent_sample

from easysmart.claimsig import ClaimKeyring, ClaimNotAuthenticError
from easysmart.config import ClaimSigningSettings, ProcessSettings, RetentionSettings, UploadLimits
from easysmart.copywriter import CopyWriter
from easysmart.errors import DatabaseTimeoutError, UnavailableError
from easysmart.process import BatchFailedError, BatchProcessor, DeferredStatements


def rows(database, tenant_id: str) -> list[tuple]:
    with database.transaction() as cursor:
        cursor.execute(
            "SELECT s.uuid, t.ts, t.value, t.state, t.battery_pct FROM telemetry_data t"
            " JOIN sensors s ON s.id = t.sensor_id WHERE s.tenant_id = %s ORDER BY 1, 2",
            (tenant_id,),
        )
        return cursor.fetchall()


@pytest.fixture
def processor(database, blobs):
    return BatchProcessor(ProcessSettings(), UploadLimits(), RetentionSettings(), database, blobs, keyring=TEST_KEYRING)


@pytest.fixture
def streaming_processor(database, blobs):
    # Nothing is parsed in one go, and chunks are tiny, so the streaming path and its chunk flushes run.
    return BatchProcessor(
        ProcessSettings(process_parse_in_one_go_bytes=0, process_chunk_readings=7),
        UploadLimits(),
        RetentionSettings(),
        database,
        blobs,
        keyring=TEST_KEYRING,
    )


def test_streamed_and_one_go_parsing_store_the_same_rows(processor, streaming_processor, blobs, database, make_account):
    items = recent_sample("ha-bulk-mixed.json")
    one_go, streamed = make_account(), make_account()
    first = processor.process(stage(blobs, one_go, items))
    second = streaming_processor.process(stage(blobs, streamed, items))
    assert (first.stored, first.skipped) == (second.stored, second.skipped) == (57, 2)
    assert rows(database, one_go.tenant_id) == rows(database, streamed.tenant_id)


@pytest.mark.parametrize("streamed", [False, True], ids=["small, opened in its load", "large, opened apart"])
def test_a_claim_check_of_an_unknown_tenant_fails_cleanly_and_records_nothing(
    processor, blobs, database, make_account, streamed
):
    claim = stage(blobs, make_account(), recent_sample("ha-bulk-small.json"))
    claim = signed(dataclasses.replace(claim, tenant_id=str(uuid.uuid4()), decompressed_bytes=None if streamed else 1))
    with pytest.raises(BatchFailedError, match="does not exist") as failed:
        processor.process(claim)
    assert failed.value.status == 422
    with database.transaction() as cursor:
        cursor.execute("SELECT count(*) FROM batches WHERE id = %s", (claim.batch_id,))
        assert cursor.fetchone() == (0,)


def test_redelivered_claim_check_stores_nothing_and_says_so(processor, blobs, database, make_account):
    account = make_account()
    claim = stage(blobs, account, recent_sample("ha-bulk-small.json"))
    assert processor.process(claim).stored == 40
    again = processor.process(claim)
    assert (again.redelivery, again.stored) == (True, 40)
    assert len(rows(database, account.tenant_id)) == 40


def test_same_uuid_in_two_tenants_is_two_unrelated_sensors(processor, blobs, database, make_account):
    items = recent_sample("ha-bulk-legacy.json")
    first, second = make_account(), make_account()
    processor.process(stage(blobs, first, items))
    processor.process(stage(blobs, second, items))
    assert len(rows(database, first.tenant_id)) == len(rows(database, second.tenant_id)) == 2


def test_latest_equipment_and_sensor_settings_win(processor, blobs, database, make_account):
    account = make_account()
    items = recent_sample("ha-bulk-small.json")
    processor.process(stage(blobs, account, items))
    items[0]["equip_nome"] = "Freezer Renomeado"
    sensor_uuid = items[0]["sensor"][0]["sensor_uuid"]
    for reading in items[0]["sensor"]:
        if reading["sensor_uuid"] == sensor_uuid:
            reading["sensor_firmware"] = "2.0"
    processor.process(stage(blobs, account, items))
    with database.transaction() as cursor:
        cursor.execute(
            "SELECT e.name, s.firmware FROM equipment e JOIN sensors s ON s.equipment_id = e.id"
            " WHERE e.tenant_id = %s AND s.uuid = %s",
            (account.tenant_id, sensor_uuid),
        )
        assert cursor.fetchone() == ("Freezer Renomeado", "2.0")


@pytest.mark.parametrize(
    "make_claim, reason",
    [
        (lambda blobs, account: stage(blobs, account, [], sha256="0" * 64), "sha256"),
        (lambda blobs, account: stage(blobs, account, None, raw=b'[{"equip_uuid": "x", "sensor": [1,'), "JSON"),
        (lambda blobs, account: stage(blobs, account, [{"equip_uuid": "x"}]), "sensor"),
        (lambda blobs, account: stage(blobs, account, None, raw=b"[" + b"\n" * 5000 + b"]"), "whitespace"),
        (
            lambda blobs, account: signed(
                dataclasses.replace(stage(blobs, account, []), key="raw/missing/blob.json.gz")
            ),
            "does not exist",
        ),
    ],
)
def test_permanently_bad_batches_are_marked_failed_with_a_reason(
    processor, blobs, database, make_account, make_claim, reason
):
    account = make_account()
    claim = make_claim(blobs, account)
    with pytest.raises(BatchFailedError, match=reason):
        processor.process(claim)
    with database.transaction() as cursor:
        cursor.execute("SELECT status, reasons FROM batches WHERE id = %s", (claim.batch_id,))
        status, reasons = cursor.fetchone()
    assert status == "failed"
    assert reason in reasons[0]["reason"]
    assert rows(database, account.tenant_id) == []


@pytest.mark.parametrize(
    ("limits", "carried"),
    [
        (UploadLimits(upload_max_sensors=7), "2 equipment items and 8 sensors"),
        (UploadLimits(upload_max_equipment=1), "2 equipment items and 8 sensors"),
    ],
    ids=["sensors", "equipment"],
)
def test_an_upload_carrying_more_equipment_or_sensors_than_allowed_fails_and_stores_nothing(
    database, blobs, make_account, limits, carried
):
    # Its telemetry.stored event names every one: unbounded, it could outgrow what Kafka takes and stop the outbox.
    processor = BatchProcessor(ProcessSettings(), limits, RetentionSettings(), database, blobs, keyring=TEST_KEYRING)
    account = make_account()
    claim = stage(blobs, account, recent_sample("ha-bulk-mixed.json"))

    with pytest.raises(BatchFailedError, match=carried):
        processor.process(claim)

    with database.transaction() as cursor:
        cursor.execute("SELECT status FROM batches WHERE id = %s", (claim.batch_id,))
        assert cursor.fetchone() == ("failed",)
        cursor.execute("SELECT count(*) FROM event_outbox WHERE data->>'batch_id' = %s", (claim.batch_id,))
        assert cursor.fetchone() == (0,)
    assert rows(database, account.tenant_id) == []
    at_the_bound = UploadLimits(upload_max_sensors=8, upload_max_equipment=2)
    processor = BatchProcessor(
        ProcessSettings(), at_the_bound, RetentionSettings(), database, blobs, keyring=TEST_KEYRING
    )
    assert processor.process(stage(blobs, make_account(), recent_sample("ha-bulk-mixed.json"))).stored == 57


def reasons_of(database, batch_id: str) -> tuple[dict, list]:
    with database.transaction() as cursor:
        cursor.execute("SELECT reason_counts, reasons FROM batches WHERE id = %s", (batch_id,))
        return cursor.fetchone()


@pytest.mark.parametrize("mode", ["one_go", "streamed"])
def test_readings_that_cannot_be_stored_are_rejected_and_the_rest_commit(
    mode, processor, streaming_processor, blobs, database, make_account
):
    account = make_account()
    sample = recent_sample("ha-bulk-small.json")[0]
    good = sample["sensor"][:2]
    good[1] = {**good[1], "sensor_nome": "n" * 1000}
    hostile = [
        {**sample["sensor"][2], "sensor_telemetria": "a\u0000b"},
        {**sample["sensor"][3], "sensor_uuid": "u" * 300_000},
        {**sample["sensor"][4], "sensor_bateria_pct": 1e39},
    ]
    # The second item's over-long equip_uuid arrives after its readings, as a client may order it.
    late_identity = {"sensor": sample["sensor"][5:8], "equip_uuid": "e" * 200}
    items = [{**sample, "sensor": good + hostile}, late_identity]

    result = (processor if mode == "one_go" else streaming_processor).process(stage(blobs, account, items))

    assert (result.status, result.stored, result.rejected) == ("done", 2, 6)
    counts, reasons = reasons_of(database, result.batch_id)
    assert counts["sensor_uuid: longer than 128 characters"] == 1
    assert counts["equip_uuid: longer than 128 characters"] == 3
    assert counts["sensor_nome: cut to 256 characters"] == 1
    assert any(r["reason"].startswith("sensor_bateria_pct: 1e+39") for r in reasons)
    assert any("cannot be stored" in r["reason"] and r["path"] == "[0].sensor[2]" for r in reasons)
    stored = rows(database, account.tenant_id)
    assert len(stored) == 2 and all(len(uuid_) <= 128 for uuid_, *_ in stored)
    with database.transaction() as cursor:
        cursor.execute("SELECT max(length(name)) FROM sensors WHERE tenant_id = %s", (account.tenant_id,))
        assert cursor.fetchone()[0] == 256
        cursor.execute("SELECT count(*) FROM equipment WHERE tenant_id = %s", (account.tenant_id,))
        assert cursor.fetchone()[0] == 1


class _FaultyWriter(CopyWriter):
    """A COPY writer whose write raises what a test injects (the fault process must classify)."""

    fault: Callable[[CopyWriter], None] = staticmethod(lambda writer: None)

    def write(self, rows):
        type(self).fault(self)
        super().write(rows)


def faulty_processor(database, blobs, fault) -> BatchProcessor:
    writer = type("Writer", (_FaultyWriter,), {"fault": staticmethod(fault)})
    return BatchProcessor(
        ProcessSettings(),
        UploadLimits(),
        RetentionSettings(),
        database,
        blobs,
        writer_factory=writer,
        keyring=TEST_KEYRING,
    )


def status_of(database, batch_id: str) -> tuple[str, int, str]:
    with database.transaction() as cursor:
        cursor.execute(
            "SELECT status, unexpected_failures, reasons->0->>'reason' FROM batches WHERE id = %s", (batch_id,)
        )
        return cursor.fetchone()


def bug(writer):
    raise RuntimeError("an injected bug")


def test_an_unexpected_error_fails_the_batch_at_the_fifth_time_and_not_before(database, blobs, make_account):
    processor = faulty_processor(database, blobs, bug)
    claim = stage(blobs, make_account(), recent_sample("ha-bulk-small.json"))
    for attempt in range(1, 5):
        with pytest.raises(RuntimeError):
            processor.process(claim)
        assert status_of(database, claim.batch_id)[:2] == ("processing", attempt)
    with pytest.raises(BatchFailedError) as failed:
        processor.process(claim)
    assert failed.value.status == 422
    status, failures, reason = status_of(database, claim.batch_id)
    assert (status, failures) == ("failed", 5) and "unexpected error (RuntimeError)" in reason


def test_an_outage_is_retried_without_counting_toward_the_cap(database, blobs, make_account):
    def outage(writer):
        raise UnavailableError("the database is unavailable")

    claim = stage(blobs, make_account(), recent_sample("ha-bulk-small.json"))
    for _ in range(6):
        with pytest.raises(UnavailableError):
            faulty_processor(database, blobs, outage).process(claim)
    assert status_of(database, claim.batch_id)[:2] == ("processing", 0)
    assert (
        BatchProcessor(ProcessSettings(), UploadLimits(), RetentionSettings(), database, blobs, keyring=TEST_KEYRING)
        .process(claim)
        .stored
        == 40
    )


def test_a_data_exception_fails_the_batch_at_once(database, blobs, make_account):
    def division_by_zero(writer):
        writer.cursor.execute("SELECT 1 / 0")

    claim = stage(blobs, make_account(), recent_sample("ha-bulk-small.json"))
    with pytest.raises(BatchFailedError):
        faulty_processor(database, blobs, division_by_zero).process(claim)
    status, failures, reason = status_of(database, claim.batch_id)
    assert (status, failures) == ("failed", 0) and "data exception, SQLSTATE 22012" in reason


def test_a_statement_timeout_counts_toward_the_cap_and_is_not_an_outage(database, blobs, make_account):
    def slow(writer):
        writer.cursor.execute("SET LOCAL statement_timeout = 10")
        writer.cursor.execute("SELECT pg_sleep(1)")

    claim = stage(blobs, make_account(), recent_sample("ha-bulk-small.json"))
    with pytest.raises(DatabaseTimeoutError) as timed_out:
        faulty_processor(database, blobs, slow).process(claim)
    assert timed_out.value.status == 503
    assert status_of(database, claim.batch_id)[:2] == ("processing", 1)


def test_a_lock_timeout_every_time_fails_the_batch_at_the_cap(database, blobs, make_account):
    held = f"it-lock-{uuid.uuid4()}"

    def blocked(writer):
        writer.cursor.execute("SET LOCAL lock_timeout = 10")
        writer.cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (held,))

    claim = stage(blobs, make_account(), recent_sample("ha-bulk-small.json"))
    with database.transaction() as holder:
        holder.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (held,))
        for attempt in range(1, 5):
            with pytest.raises(DatabaseTimeoutError):
                faulty_processor(database, blobs, blocked).process(claim)
            assert status_of(database, claim.batch_id)[:2] == ("processing", attempt)
        with pytest.raises(BatchFailedError):
            faulty_processor(database, blobs, blocked).process(claim)
    status, failures, reason = status_of(database, claim.batch_id)
    assert (status, failures) == ("failed", 5) and "unexpected error (DatabaseTimeoutError)" in reason


# --- authenticated claim checks --------------------------------------------------------------------

ATTACKER_KEYRING = ClaimKeyring.from_settings(
    ClaimSigningSettings(claim_signing_key="attacker-claim-signing-key-" + "a" * 40, claim_signing_key_id="test-2")
)


def batch_row_count(database, batch_id: str) -> int:
    with database.transaction() as cursor:
        cursor.execute("SELECT count(*) FROM batches WHERE id = %s", (batch_id,))
        return cursor.fetchone()[0]


@pytest.mark.parametrize(
    "forge, reason",
    [
        (lambda claim, victim: dataclasses.replace(claim, signing_key_id=None, signature=None), "not signed"),
        (lambda claim, victim: dataclasses.replace(claim, signing_key_id="k-unknown"), "unknown key id"),
        (lambda claim, victim: ATTACKER_KEYRING.sign(claim), "signature does not verify"),
        (lambda claim, victim: dataclasses.replace(claim, tenant_id=victim.tenant_id), "signature does not verify"),
        (
            lambda claim, victim: dataclasses.replace(
                claim, tenant_id=victim.tenant_id, account_id=victim.account_id, key=claim.key.replace("a", "b")
            ),
            "signature does not verify",
        ),
    ],
    ids=["unsigned", "unknown key", "wrong key", "tenant changed", "tenant and blob changed"],
)
def test_a_forged_or_tampered_claim_check_is_refused_and_leaves_no_trace(
    processor, blobs, database, make_account, forge, reason
):
    attacker, victim = make_account(), make_account()
    claim = forge(stage(blobs, attacker, recent_sample("ha-bulk-small.json")), victim)

    with pytest.raises(ClaimNotAuthenticError, match=reason) as refused:
        processor.process(claim)

    assert refused.value.status == 422
    assert batch_row_count(database, claim.batch_id) == 0
    assert rows(database, attacker.tenant_id) == rows(database, victim.tenant_id) == []


def test_a_signed_claim_check_pointing_at_another_tenants_blob_fails_and_stores_nothing(
    processor, blobs, database, make_account
):
    owner, intruder = make_account(), make_account()
    theirs = stage(blobs, owner, recent_sample("ha-bulk-small.json"))
    # Authentic for the intruder's tenant (ingest signed it), but the blob it names is the owner's.
    claim = signed(
        dataclasses.replace(
            theirs, batch_id=str(uuid.uuid4()), tenant_id=intruder.tenant_id, account_id=intruder.account_id
        )
    )

    with pytest.raises(BatchFailedError, match=r"metadata \(account-id, batch-id, tenant-id\)") as failed:
        processor.process(claim)

    assert failed.value.status == 422
    status, _, reason = status_of(database, claim.batch_id)
    assert status == "failed" and "does not match the claim check" in reason
    assert rows(database, intruder.tenant_id) == rows(database, owner.tenant_id) == []
    assert processor.process(theirs).stored == 40  # the owner's own claim check still works


def test_a_claim_check_signed_with_a_retired_key_is_processed(processor, blobs, database, make_account):
    account = make_account()
    claim = RETIRED_KEYRING.sign(stage(blobs, account, recent_sample("ha-bulk-small.json")))

    assert processor.process(claim).stored == 40
    assert len(rows(database, account.tenant_id)) == 40


def test_deferred_statements_go_together_on_the_transaction_and_a_failing_one_raises_its_sqlstate(database):
    with database.connection() as conn, conn.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE deferred_probe (n int PRIMARY KEY)")
        deferred = DeferredStatements(cursor)
        deferred.execute("INSERT INTO deferred_probe VALUES (%s)", (1,))
        deferred.execute("INSERT INTO deferred_probe VALUES (%(n)s)", {"n": 2})
        cursor.execute("SELECT count(*) FROM deferred_probe")
        assert cursor.fetchone() == (0,)  # nothing sent before flush()
        deferred.flush()
        cursor.execute("SELECT count(*) FROM deferred_probe")
        assert cursor.fetchone() == (2,)
        deferred.execute("INSERT INTO deferred_probe VALUES (%s)", (3,))
        deferred.execute("INSERT INTO deferred_probe VALUES (%s)", (1,))
        with pytest.raises(psycopg2.errors.UniqueViolation):
            deferred.flush()
        conn.rollback()
