"""BatchLedger against the real PostgreSQL: the rules the in-memory FakeLedger of the unit tests mirrors."""

import dataclasses
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from support.claims import CLAIM

from easysmart.ledger import BatchCounts, BatchLedger, BatchStatus


@pytest.fixture
def ledger(database) -> BatchLedger:
    return BatchLedger(database)


def claim_for(account, received_at: datetime | None = None, sha256: str | None = None):
    return dataclasses.replace(
        CLAIM,
        batch_id=str(uuid.uuid4()),
        tenant_id=account.tenant_id,
        account_id=account.account_id,
        sha256=sha256 or uuid.uuid4().hex * 2,
        received_at=(received_at or datetime.now(timezone.utc)).isoformat(),
    )


def test_a_batch_goes_accepted_processing_done_and_stays_done(ledger, database, make_account):
    claim = claim_for(make_account())
    ledger.record_accepted(claim)
    assert ledger.status_for_tenant(claim.tenant_id, claim.batch_id).status == BatchStatus.ACCEPTED
    with database.transaction() as cursor:
        assert ledger.open_for_processing(cursor, claim) == BatchStatus.PROCESSING
    with database.transaction() as cursor:
        assert ledger.lock_for_load(cursor, claim.batch_id) == BatchStatus.PROCESSING
        ledger.mark_done(
            cursor,
            claim.batch_id,
            1,
            BatchCounts(readings=3, stored=2, duplicate=0, skipped=1, rejected=0),
            [{"path": "[0].sensor[2]", "reason": "no time", "outcome": "skipped"}],
            {"no time": 1},
        )
    ledger.mark_failed(claim.batch_id, "too late")
    with database.transaction() as cursor:
        assert ledger.open_for_processing(cursor, claim) == BatchStatus.DONE
    done = ledger.status_for_tenant(claim.tenant_id, claim.batch_id)
    assert (done.status, done.items, done.stored, done.skipped, done.reason_counts) == (
        BatchStatus.DONE,
        1,
        2,
        1,
        {"no time": 1},
    )
    assert ledger.counts_of(claim.batch_id) == BatchCounts(readings=3, stored=2, duplicate=0, skipped=1, rejected=0)


def test_processed_at_is_when_the_batch_commits_not_when_its_transaction_began(ledger, database, make_account):
    claim = claim_for(make_account())
    with database.transaction() as cursor:
        ledger.open_for_processing(cursor, claim)
    with database.transaction() as cursor:
        cursor.execute("SELECT now()")  # the transaction's start, which a long batch may be far past
        began = cursor.fetchone()[0]
        ledger.mark_done(cursor, claim.batch_id, 0, BatchCounts(0, 0, 0, 0, 0), [], {})

    assert ledger.status_for_tenant(claim.tenant_id, claim.batch_id).processed_at > began


def test_mark_done_is_undone_with_the_caller_s_transaction(ledger, database, make_account):
    claim = claim_for(make_account())
    with database.transaction() as cursor:
        ledger.open_for_processing(cursor, claim)
    with pytest.raises(RuntimeError):
        with database.transaction() as cursor:
            ledger.mark_done(cursor, claim.batch_id, 0, BatchCounts(0, 0, 0, 0, 0), [], {})
            raise RuntimeError("the COPY failed")
    assert ledger.status_for_tenant(claim.tenant_id, claim.batch_id).status == BatchStatus.PROCESSING


def test_a_batch_process_opens_first_is_recorded_from_its_claim_check(ledger, database, make_account):
    claim = claim_for(make_account())
    with database.transaction() as cursor:
        assert ledger.open_for_processing(cursor, claim) == BatchStatus.PROCESSING
    ledger.record_accepted(claim)  # ingest's late insert changes nothing
    assert ledger.status_for_tenant(claim.tenant_id, claim.batch_id).status == BatchStatus.PROCESSING


def test_an_identical_upload_finds_the_first_batch_that_did_not_fail(ledger, make_account):
    account = make_account()
    now = datetime.now(timezone.utc)
    failed, first, second = (claim_for(account, now - timedelta(minutes=m), sha256="ab" * 32) for m in (3, 2, 1))
    for claim in (failed, first, second):
        ledger.record_accepted(claim)
    ledger.mark_failed(failed.batch_id, "not JSON")
    assert ledger.find_identical(account.account_id, "ab" * 32, now - timedelta(days=1)).batch_id == first.batch_id
    assert ledger.find_identical(account.account_id, "ab" * 32, now - timedelta(seconds=90)).batch_id == second.batch_id
    assert ledger.find_identical(account.account_id, "cd" * 32, now - timedelta(days=1)) is None


def test_status_is_found_for_the_batch_s_own_tenant_only(ledger, make_account):
    claim = claim_for(make_account())
    ledger.record_accepted(claim)
    assert ledger.status_for_tenant(make_account().tenant_id, claim.batch_id) is None


def test_prune_deletes_the_rows_received_before_the_time(ledger, make_account):
    account = make_account()
    # Times no other test uses, so pruning before them touches only these rows.
    old = claim_for(account, datetime(2001, 1, 1, tzinfo=timezone.utc))
    kept = claim_for(account, datetime(2001, 1, 3, tzinfo=timezone.utc))
    ledger.record_accepted(old)
    ledger.record_accepted(kept)
    assert ledger.prune(datetime(2001, 1, 2, tzinfo=timezone.utc)) == 1
    assert ledger.status_for_tenant(account.tenant_id, old.batch_id) is None
    assert ledger.status_for_tenant(account.tenant_id, kept.batch_id) is not None


def test_open_for_load_records_the_batch_with_the_tenant_s_zone_and_leaves_done_done(ledger, database, make_account):
    claim = claim_for(make_account())
    with database.transaction() as cursor:
        cursor.execute("SELECT timezone FROM tenants WHERE id = %s", (claim.tenant_id,))
        (zone,) = cursor.fetchone()
        assert ledger.open_for_load(cursor, claim) == (zone, BatchStatus.PROCESSING)
        ledger.mark_done(cursor, claim.batch_id, 0, BatchCounts(0, 0, 0, 0, 0), [], {})
    with database.transaction() as cursor:
        assert ledger.open_for_load(cursor, claim) == (zone, BatchStatus.DONE)


def test_open_for_load_of_an_unknown_tenant_records_nothing(ledger, database, make_account):
    claim = dataclasses.replace(claim_for(make_account()), tenant_id=str(uuid.uuid4()))
    with database.transaction() as cursor:
        assert ledger.open_for_load(cursor, claim) is None
    assert ledger.status_for_tenant(claim.tenant_id, claim.batch_id) is None
