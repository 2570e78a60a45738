"""Guarded transitions and atomic settlement against the real PostgreSQL."""

import threading
from decimal import Decimal

import psycopg
import pytest
from airflow.providers.postgres.hooks.postgres import PostgresHook
from psycopg.pq import TransactionStatus

from ledgerflow.core.audit import AuditContext
from ledgerflow.core.reasons import ReasonCode
from ledgerflow.core.settlement import Refused, Settled
from ledgerflow.core.states import IllegalTransition, Status, StatusChange
from ledgerflow.store import ledger as ledger_store
from ledgerflow.store.ledger import LockedSettlement, settle, transition
from tests.conftest import open_pg
from tests.integration.conftest import a_session_waits_for

AIRFLOW = AuditContext(changed_by="airflow", dag_id="ledgerflow_clear", run_id="manual__2026-11-25T09:00:00",
                       task_id="clear_batch", try_number=2, map_index=-1)
D = Decimal


def cleared(transaction_id):
    return StatusChange(transaction_id, Status.PENDING, Status.CLEARED, ReasonCode.CLEARED, "risk score 0 is below 40")


def test_a_transition_applied_twice_writes_one_audit_row_and_reports_the_duplicate(ledger):
    accounts = ledger.accounts("100.00", "0.00")
    [transaction_id] = ledger.transactions((accounts[0], accounts[1], "10.00"))

    first = transition(ledger.conn, [cleared(transaction_id)], AIRFLOW)
    second = transition(ledger.conn, [cleared(transaction_id)], AIRFLOW)

    assert (first.applied, first.duplicates) == ([transaction_id], [])
    assert (second.applied, second.duplicates) == ([], [transaction_id])
    assert ledger.audit(transaction_id) == [
        ("pending", "cleared", "CLEARED", "airflow", "ledgerflow_clear", "manual__2026-11-25T09:00:00",
         "clear_batch", 2, -1)]


def test_a_batch_of_transitions_applies_each_once_even_if_listed_twice(ledger):
    accounts = ledger.accounts("100.00", "0.00")
    ids = ledger.transactions(*[(accounts[0], accounts[1], "1.00")] * 3)

    result = transition(ledger.conn, [cleared(ids[0]), cleared(ids[1]), cleared(ids[0]), cleared(ids[2])], AIRFLOW)

    assert result.applied == ids and result.duplicates == []
    assert [len(ledger.audit(i)) for i in ids] == [1, 1, 1]


def test_changes_decided_together_are_decided_again_once_a_transaction_left_its_status(ledger):
    """A change whose transaction left its expected status (or the ledger) is a duplicate; the rest are decided
    again, under the rows' locks, from the statuses they have, and of what that decision returns only changes of the
    given transactions still in their expected status are applied: not the moved one, nor one outside the batch."""
    accounts = ledger.accounts("100.00", "0.00")
    moved, deleted, kept, outside = ledger.transactions(*[(accounts[0], accounts[1], "1.00")] * 4)
    transition(ledger.conn, [cleared(moved)], AIRFLOW)
    ledger.conn.execute("DELETE FROM transactions WHERE transaction_id = %s", (deleted,))
    asked_with = []

    def decide_again(current):
        asked_with.append(current)
        return [StatusChange(i, Status.PENDING, Status.REJECTED, ReasonCode.INSUFFICIENT_FUNDS, "decided again")
                for i in (moved, kept, outside)]

    result = transition(ledger.conn, [cleared(i) for i in (moved, deleted, kept)], AIRFLOW, decide_again=decide_again)

    assert asked_with == [{moved: Status.CLEARED, kept: Status.PENDING}]
    assert (result.applied, result.duplicates) == ([kept], [moved, deleted])
    assert ledger.statuses([moved, kept, outside]) == {moved: "cleared", kept: "rejected", outside: "pending"}


def test_changes_whose_transactions_are_all_as_expected_are_not_decided_again(ledger):
    accounts = ledger.accounts("100.00", "0.00")
    ids = ledger.transactions(*[(accounts[0], accounts[1], "1.00")] * 2)

    result = transition(ledger.conn, [cleared(i) for i in ids], AIRFLOW, decide_again=lambda current: pytest.fail())

    assert result.applied == ids


def test_an_illegal_transition_cannot_even_be_requested():
    with pytest.raises(IllegalTransition, match="pending -> settled"):
        StatusChange("T1", Status.PENDING, Status.SETTLED, ReasonCode.SETTLED, "skip clearance")


def test_a_missing_risk_score_is_recorded_and_a_recorded_one_kept(ledger):
    """clear fills in the score of a transaction decided by hand; one that has a score meanwhile keeps it.
    (The fill's lock order, transaction_id like every writer's, is not something a test here can catch.)"""
    source, destination = ledger.accounts("100.00", "0.00")
    unscored, scored = ledger.transactions((source, destination, "1.00"), (source, destination, "2.00"),
                                           status="rejected")
    ledger.conn.execute("UPDATE transactions SET risk_score = 70 WHERE transaction_id = %s", (scored,))

    ledger_store.record_missing_risk_scores(ledger.conn, {unscored: 15, scored: 15})

    scores = ledger.conn.execute("SELECT transaction_id, risk_score FROM transactions WHERE transaction_id = ANY(%s)",
                                 ([unscored, scored],)).fetchall()
    assert dict(scores) == {unscored: 15, scored: 70}
    assert [len(ledger.audit(i)) for i in (unscored, scored)] == [1, 1]  # only the change to rejected


def test_changes_outside_airflow_are_audited_without_airflow_context(ledger):
    accounts = ledger.accounts("100.00", "0.00")
    [transaction_id] = ledger.transactions((accounts[0], accounts[1], "10.00"))

    transition(ledger.conn, [cleared(transaction_id)], AuditContext(changed_by="ops:jane"))

    assert ledger.audit(transaction_id) == [
        ("pending", "cleared", "CLEARED", "ops:jane", None, None, None, None, None)]


def test_settlement_records_before_and_after_balances_postings_and_transitions(ledger):
    source, destination = ledger.accounts("100.00", "5.00")
    ids = ledger.transactions((source, destination, "60.00"), (source, destination, "50.00"),
                              (source, destination, "40.00"), status="cleared")

    result = settle(ledger.conn, ids, AIRFLOW)

    assert [type(o) for o in result.outcomes] == [Settled, Refused, Settled]
    first, refused, last = result.outcomes
    assert (first.from_balance_before, first.from_balance_after, first.to_balance_before, first.to_balance_after) == (
        D("100.00"), D("40.00"), D("5.00"), D("65.00"))
    assert refused.available_balance == D("40.00")
    assert (last.from_balance_before, last.from_balance_after) == (D("40.00"), D("0.00"))
    assert ledger.balances([source, destination]) == {source: D("0.00"), destination: D("105.00")}
    assert ledger.statuses(ids) == {ids[0]: "settled", ids[1]: "rejected", ids[2]: "settled"}
    assert ledger.conn.execute("SELECT status_message FROM transactions WHERE transaction_id = %s",
                               (ids[0],)).fetchone()[0] == f"settled 60.00 from {source} to {destination}"
    assert [row[:3] for row in ledger.audit(ids[1])] == [
        ("pending", "cleared", "CLEARED"), ("cleared", "rejected", "INSUFFICIENT_FUNDS_AT_SETTLEMENT")]
    for settled in (ids[0], ids[2]):
        assert [row[:3] for row in ledger.audit(settled)] == [
            ("pending", "cleared", "CLEARED"), ("cleared", "settled", "SETTLED")]
    assert ledger.reconciliation_gaps([source, destination]) == []


def test_a_credit_past_the_largest_balance_is_rejected_and_the_batch_settles(ledger):
    source, full, other = ledger.accounts("100.00", "9999999999990.00", "0.00")
    ids = ledger.transactions((source, full, "20.00"), (source, other, "30.00"), status="cleared")

    result = settle(ledger.conn, ids, AIRFLOW)

    assert [type(o) for o in result.outcomes] == [Refused, Settled]
    assert ledger.statuses(ids) == {ids[0]: "rejected", ids[1]: "settled"}
    assert ledger.balances([source, full, other]) == {
        source: D("70.00"), full: D("9999999999990.00"), other: D("30.00")}
    assert ledger.conn.execute("SELECT status_reason_code, status_message FROM transactions WHERE transaction_id = %s",
                               (ids[0],)).fetchone() == (
        "DESTINATION_BALANCE_LIMIT_AT_SETTLEMENT", f"20.00 would take the balance of {full} past 9999999999999.99")
    assert ledger.reconciliation_gaps([source, full, other]) == []


def test_a_transfer_from_or_to_an_account_frozen_or_closed_since_clearance_is_rejected(ledger):
    source, destination, frozen, closed = ledger.accounts("100.00", "0.00", "50.00", "0.00")
    ids = ledger.transactions((frozen, destination, "10.00"), (source, closed, "20.00"),
                              (source, destination, "30.00"), status="cleared")
    ledger.conn.execute("UPDATE accounts SET status = CASE account_number WHEN %s THEN 'FROZEN' ELSE 'CLOSED' END "
                        "WHERE account_number IN (%s, %s)", (frozen, frozen, closed))

    result = settle(ledger.conn, ids, AIRFLOW)

    assert [type(o) for o in result.outcomes] == [Refused, Refused, Settled]
    assert ledger.statuses(ids) == {ids[0]: "rejected", ids[1]: "rejected", ids[2]: "settled"}
    assert ledger.balances([source, destination, frozen, closed]) == {
        source: D("70.00"), destination: D("30.00"), frozen: D("50.00"), closed: D("0.00")}
    assert ledger.conn.execute(
        "SELECT status_reason_code, status_message FROM transactions WHERE transaction_id = ANY(%s) "
        "ORDER BY array_position(%s, transaction_id)", (ids[:2], ids[:2])).fetchall() == [
        ("SOURCE_ACCOUNT_NOT_ACTIVE_AT_SETTLEMENT", f"source account {frozen} is FROZEN"),
        ("DESTINATION_ACCOUNT_NOT_ACTIVE_AT_SETTLEMENT", f"destination account {closed} is CLOSED")]
    assert [row[:3] for row in ledger.audit(ids[0])] == [
        ("pending", "cleared", "CLEARED"), ("cleared", "rejected", "SOURCE_ACCOUNT_NOT_ACTIVE_AT_SETTLEMENT")]
    assert ledger.reconciliation_gaps([source, destination, frozen, closed]) == []


def test_after_a_refusal_the_accounts_as_another_session_left_them_decide(ledger, monkeypatch):
    """A refusal rolls the batch back to its savepoint, which unlocks its accounts, and locks and reads them again.
    A session that freezes an account in between must get its lock, and the second reading, which sees the
    account frozen, decides: the transfer the first reading settled is refused."""
    poor, payer, payee = ledger.accounts("100.00", "50.00", "0.00")
    ids = ledger.transactions((poor, payee, "150.00"), (payer, payee, "10.00"), status="cleared")
    readings = []
    read_accounts_and_settle = ledger_store._lock_accounts_and_settle

    def freezing_the_payer_before_the_second_reading(cursor, transfers):
        if readings:
            with open_pg() as other:  # closed on the way out, whatever happens
                other.execute("SET lock_timeout = '10s'")
                other.execute("UPDATE accounts SET status = 'FROZEN' WHERE account_number = %s", (payer,))
        readings.append(read_accounts_and_settle(cursor, transfers))
        return readings[-1]

    monkeypatch.setattr(ledger_store, "_lock_accounts_and_settle", freezing_the_payer_before_the_second_reading)
    result = settle(ledger.conn, ids, AIRFLOW)

    assert len(readings) == 2
    assert [type(o) for o in readings[0][1]] == [Refused, Settled]
    assert [(type(o), getattr(o, "reason_code", None)) for o in result.outcomes] == [
        (Refused, ReasonCode.INSUFFICIENT_FUNDS_AT_SETTLEMENT),
        (Refused, ReasonCode.SOURCE_ACCOUNT_NOT_ACTIVE_AT_SETTLEMENT)]
    assert ledger.statuses(ids) == {ids[0]: "rejected", ids[1]: "rejected"}
    assert ledger.balances([poor, payer, payee]) == {poor: D("100.00"), payer: D("50.00"), payee: D("0.00")}
    assert ledger.reconciliation_gaps([poor, payer, payee]) == []


def test_settling_the_same_batch_again_changes_nothing(ledger):
    source, destination = ledger.accounts("100.00", "0.00")
    ids = ledger.transactions((source, destination, "30.00"), (source, destination, "20.00"), status="cleared")
    settle(ledger.conn, ids, AIRFLOW)
    balances = ledger.balances([source, destination])

    replay = settle(ledger.conn, list(reversed(ids)) + ids, AIRFLOW)

    assert replay.outcomes == [] and replay.not_settleable == {ids[0]: "settled", ids[1]: "settled"}
    assert ledger.balances([source, destination]) == balances
    assert [len(ledger.audit(i)) for i in ids] == [2, 2]


def test_cleared_with_conditions_settles_too_and_its_settlement_says_so(ledger):
    source, destination = ledger.accounts("100.00", "0.00")
    [transaction_id] = ledger.transactions((source, destination, "30.00"), status="cleared_with_conditions")

    result = settle(ledger.conn, [transaction_id], AIRFLOW)

    assert ledger.statuses([transaction_id]) == {transaction_id: "settled"}
    assert ledger.balances([source, destination]) == {source: D("70.00"), destination: D("30.00")}
    assert [row[:3] for row in ledger.audit(transaction_id)][-1] == ("cleared_with_conditions", "settled", "SETTLED")
    assert result.settled_from == {transaction_id: Status.CLEARED_WITH_CONDITIONS}  # what its record shows


def test_only_cleared_transactions_settle(ledger):
    source, destination = ledger.accounts("100.00", "0.00")
    [pending] = ledger.transactions((source, destination, "30.00"))

    result = settle(ledger.conn, [pending, "no-such-transaction"], AIRFLOW)

    assert result.outcomes == []
    assert result.not_settleable == {pending: "pending", "no-such-transaction": "unknown"}
    assert ledger.balances([source]) == {source: D("100.00")}


def run_concurrently(jobs):
    """Run each job in its own thread with its own connection; re-raise the first error."""
    errors, barrier = [], threading.Barrier(len(jobs))

    def worker(job):
        conn = PostgresHook(postgres_conn_id="ledgerflow_postgres").get_conn()
        conn.autocommit = True
        try:
            barrier.wait()
            job(conn)
        except Exception as error:  # noqa: BLE001 - collected and re-raised in the test's thread
            errors.append(error)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    assert not any(thread.is_alive() for thread in threads), "a job still runs after 120 s"


def test_concurrent_debits_of_one_account_never_take_it_below_zero(ledger):
    source, *destinations = ledger.accounts("1000.00", "0.00", "0.00", "0.00")
    ids = ledger.transactions(*[(source, destinations[i % 3], "100.00") for i in range(30)], status="cleared")
    total_before = sum(ledger.balances([source, *destinations]).values())
    batches = [ids[i::6] for i in range(6)]

    run_concurrently([lambda conn, batch=batch: settle(conn, batch, AIRFLOW) for batch in batches])

    statuses = ledger.statuses(ids)
    assert sorted(statuses.values()).count("settled") == 10
    assert sorted(statuses.values()).count("rejected") == 20
    balances = ledger.balances([source, *destinations])
    assert balances[source] == D("0.00")
    assert sum(balances.values()) == total_before
    assert ledger.reconciliation_gaps([source, *destinations]) == []


def test_a_batch_locked_before_the_previous_one_settles_starts_from_its_balances(ledger):
    """settle locks batch N+1's transactions while batch N settles: N+1 must read the balances N leaves."""
    source, destination = ledger.accounts("100.00", "0.00")
    first, second = ledger.transactions((source, destination, "60.00"), (source, destination, "50.00"),
                                        status="cleared")
    other = PostgresHook(postgres_conn_id="ledgerflow_postgres").get_conn()
    other.autocommit = True
    try:
        earlier = LockedSettlement(ledger.conn, [first], AIRFLOW)
        later = LockedSettlement(other, [second], AIRFLOW)
        assert [type(o) for o in earlier.complete().outcomes] == [Settled]
        [refused] = later.complete().outcomes
    finally:
        other.close()

    assert refused == Refused(refused.transfer, D("40.00"), ReasonCode.INSUFFICIENT_FUNDS_AT_SETTLEMENT,
                              f"balance 40.00 of {source} no longer covers 50.00")
    assert ledger.balances([source, destination]) == {source: D("40.00"), destination: D("60.00")}
    assert ledger.reconciliation_gaps([source, destination]) == []


def test_a_transaction_in_two_overlapping_batches_settles_once(ledger):
    """A redelivered transaction can be in the batch that settles and in the next one, locked meanwhile:
    the later lock waits for the earlier settlement and then finds the transaction settled."""
    source, destination = ledger.accounts("100.00", "0.00")
    shared, new = ledger.transactions((source, destination, "30.00"), (source, destination, "20.00"),
                                      status="cleared")
    earlier = LockedSettlement(ledger.conn, [shared], AIRFLOW)
    later: list = []
    locking = threading.Thread(target=lambda: run_concurrently(
        [lambda conn: later.append(LockedSettlement(conn, [shared, new], AIRFLOW).complete())]))
    locking.start()
    assert a_session_waits_for(ledger.conn), "the later batch waits for the transaction the earlier one holds"

    earlier.complete()
    locking.join(timeout=30)
    assert not locking.is_alive()

    [result] = later
    assert [o.transfer.transaction_id for o in result.outcomes] == [new]
    assert result.not_settleable == {shared: "settled"}
    assert ledger.balances([source, destination]) == {source: D("50.00"), destination: D("50.00")}
    assert [len(ledger.audit(i)) for i in (shared, new)] == [2, 2]


def test_the_next_batch_waits_through_a_refusal_and_finds_the_shared_transactions_decided(ledger):
    """The next batch, locked while this one completes, waits for a transaction the two share (a
    redelivery). It keeps waiting while this one rolls its settled marks back after a refusal, as the rows
    stay locked, and then finds them settled or rejected: each transfer is decided once."""
    source, destination = ledger.accounts("100.00", "0.00")
    settles, refused, new = ledger.transactions((source, destination, "60.00"), (source, destination, "50.00"),
                                                (source, destination, "30.00"), status="cleared")
    earlier = LockedSettlement(ledger.conn, [settles, refused], AIRFLOW)
    later: list = []
    locking = threading.Thread(target=lambda: run_concurrently(
        [lambda conn: later.append(LockedSettlement(conn, [refused, settles, new], AIRFLOW).complete())]))
    locking.start()
    assert a_session_waits_for(ledger.conn), "the next batch waits for the transactions this one holds"

    result = earlier.complete()
    locking.join(timeout=30)
    assert not locking.is_alive()

    assert [type(o) for o in result.outcomes] == [Settled, Refused]
    [next_batch] = later
    assert next_batch.not_settleable == {refused: "rejected", settles: "settled"}
    assert [(o.transfer.transaction_id, type(o)) for o in next_batch.outcomes] == [(new, Settled)]
    assert [len(ledger.audit(i)) for i in (settles, refused, new)] == [2, 2, 2]
    assert ledger.balances([source, destination]) == {source: D("10.00"), destination: D("90.00")}
    assert ledger.reconciliation_gaps([source, destination]) == []


def test_a_refusal_that_a_credit_undoes_before_the_accounts_are_locked_again_still_marks_every_transfer(
        ledger, monkeypatch):
    """A settlement whose first reading of the balances refuses a transfer rolls its settled marks back and
    unlocks the accounts until it reads them again; another settlement may credit the source meanwhile.
    What the second reading decides is what is recorded: here both transfers settle, and both are marked."""
    source, destination, payer = ledger.accounts("100.00", "0.00", "500.00")
    transfers = ledger.transactions((source, destination, "60.00"), (source, destination, "50.00"),
                                    status="cleared")
    [credit] = ledger.transactions((payer, source, "100.00"), status="cleared")
    lock_accounts_and_settle, readings = ledger_store._lock_accounts_and_settle, []

    def credit_between_the_readings(cursor, batch):
        if [t.transaction_id for t in batch] == transfers:  # not the credit's own settlement
            readings.append(batch)
            if len(readings) == 2:  # the marks were rolled back and the accounts unlocked: the credit lands now
                run_concurrently([lambda conn: settle(conn, [credit], AIRFLOW)])
        return lock_accounts_and_settle(cursor, batch)

    monkeypatch.setattr(ledger_store, "_lock_accounts_and_settle", credit_between_the_readings)
    result = settle(ledger.conn, transfers, AIRFLOW)

    assert len(readings) == 2, "the first reading refused the 50.00"
    assert [type(o) for o in result.outcomes] == [Settled, Settled] and result.refusals == {}
    assert ledger.statuses([*transfers, credit]) == dict.fromkeys([*transfers, credit], "settled")
    for transaction_id in transfers:
        assert [row[:3] for row in ledger.audit(transaction_id)] == [
            ("pending", "cleared", "CLEARED"), ("cleared", "settled", "SETTLED")]
    assert ledger.balances([source, destination, payer]) == {source: D("90.00"), destination: D("110.00"),
                                                             payer: D("400.00")}
    assert ledger.reconciliation_gaps([source, destination, payer]) == []


def test_an_abandoned_settlement_releases_its_transactions(ledger):
    source, destination = ledger.accounts("100.00", "0.00")
    ids = ledger.transactions((source, destination, "30.00"), status="cleared")
    LockedSettlement(ledger.conn, ids, AIRFLOW).abandon()

    # on another connection, which would wait for a lock the abandoned settlement kept
    run_concurrently([lambda conn: (conn.execute("SET lock_timeout = '5s'"), settle(conn, ids, AIRFLOW))])

    assert ledger.balances([source, destination]) == {source: D("70.00"), destination: D("30.00")}


def test_a_settlement_that_fails_after_writing_balances_leaves_nothing_and_nothing_locked(ledger):
    source, destination = ledger.accounts("100.00", "0.00")
    ids = ledger.transactions((source, destination, "30.00"), status="cleared")
    locked = LockedSettlement(ledger.conn, ids, AIRFLOW)
    # a posting already there makes the journal's unique key refuse the settlement's, after the balances
    ledger.conn.execute("INSERT INTO journal_postings (transaction_id, account_number, direction, amount, "
                        "balance_after) VALUES (%s, %s, 'DEBIT', 30.00, 70.00)", (ids[0], source))

    with pytest.raises(psycopg.errors.UniqueViolation):
        locked.complete()

    assert ledger.conn.info.transaction_status == TransactionStatus.IDLE
    assert ledger.balances([source, destination]) == {source: D("100.00"), destination: D("0.00")}
    assert ledger.statuses(ids) == {ids[0]: "cleared"}
    settle(ledger.conn, ids, AIRFLOW)
    assert ledger.balances([source, destination]) == {source: D("70.00"), destination: D("30.00")}


def test_the_same_batch_settled_by_two_workers_at_once_settles_once(ledger):
    source, destination = ledger.accounts("500.00", "0.00")
    ids = ledger.transactions(*[(source, destination, "10.00")] * 20, status="cleared")

    run_concurrently([lambda conn: settle(conn, ids, AIRFLOW), lambda conn: settle(conn, list(reversed(ids)), AIRFLOW)])

    assert set(ledger.statuses(ids).values()) == {"settled"}
    assert ledger.balances([source, destination]) == {source: D("300.00"), destination: D("200.00")}
    count = ledger.conn.execute("SELECT count(*) FROM journal_postings WHERE transaction_id = ANY(%s)", (ids,)).fetchone()[0]
    assert count == 40
    assert ledger.reconciliation_gaps([source, destination]) == []


def test_settling_does_not_wait_for_inserts_that_reference_its_accounts(ledger):
    # An open INSERT of a transfer holds a key-share lock on both its accounts (the foreign-key check),
    # as the application's inserts do all the time. Settlement only changes balances, so it must not
    # need a lock that conflicts with that: under load, waiting on it deadlocked with inserts that had
    # locked the same accounts in another order.
    source, destination = ledger.accounts("500.00", "0.00")
    [cleared] = ledger.transactions((source, destination, "10.00"), status="cleared")
    inserter = PostgresHook(postgres_conn_id="ledgerflow_postgres").get_conn()
    try:
        inserter.execute("INSERT INTO transactions (transaction_id, amount, from_account, to_account) "
                         "VALUES (%s, 1.00, %s, %s)", (f"{ledger.prefix}-open", destination, source))
        ledger.conn.execute("SET lock_timeout = '2s'")

        settle(ledger.conn, [cleared], AIRFLOW)

        assert ledger.statuses([cleared]) == {cleared: "settled"}
    finally:
        ledger.conn.execute("RESET lock_timeout")
        inserter.rollback()
        inserter.close()
