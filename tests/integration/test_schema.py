"""The database enforces the domain's rules, and restates exactly the core's statuses, transitions and reasons."""

from decimal import Decimal

import psycopg
import pytest

from ledgerflow.core.audit import AuditContext
from ledgerflow.core.reasons import ReasonCode
from ledgerflow.core.states import REASONS, TERMINAL, TRANSITIONS, Status, StatusChange
from ledgerflow.store.ledger import settle, transition
from tests.integration.conftest import refused_and_rolled_back


def test_the_database_knows_exactly_the_cores_statuses_and_transitions(pg):
    statuses = dict(pg.execute("SELECT status, terminal FROM transaction_statuses").fetchall())
    transitions = set(pg.execute("SELECT from_status, to_status FROM transaction_status_transitions").fetchall())

    assert statuses == {status.value: status in TERMINAL for status in Status}
    assert transitions == {(old.value, new.value) for old, targets in TRANSITIONS.items() for new in targets}


def test_the_database_knows_exactly_the_cores_reason_codes_and_their_statuses(pg):
    codes = {row[0] for row in pg.execute("SELECT reason_code FROM reason_codes").fetchall()}
    assert codes == {code.value for code in ReasonCode}
    pairs = set(pg.execute("SELECT status, reason_code FROM transaction_status_reasons").fetchall())
    assert pairs == {(status.value, reason.value) for status, reasons in REASONS.items() for reason in reasons}


@pytest.mark.parametrize(("amount", "from_index", "to_index", "error"), [
    ("1500.001", 0, 1, 'violates check constraint "money_amount_at_most_two_decimals"'),
    ("0.00", 0, 1, 'violates check constraint "transactions_amount_positive"'),
    ("-10.00", 0, 1, 'violates check constraint "transactions_amount_positive"'),
    ("10.00", 0, 0, 'violates check constraint "transactions_distinct_accounts"'),
])
def test_bad_transactions_are_refused_at_insert_with_a_clear_error(ledger, amount, from_index, to_index, error):
    accounts = ledger.accounts("100.00", "100.00")
    with pytest.raises(psycopg.errors.CheckViolation, match=error):
        ledger.conn.execute(
            "INSERT INTO transactions (transaction_id, amount, from_account, to_account) VALUES (%s, %s, %s, %s)",
            (f"{ledger.prefix}-bad", amount, accounts[from_index], accounts[to_index]))


@pytest.mark.parametrize(("statement", "constraint"), [
    ("INSERT INTO customers (customer_id, name) VALUES ('', 'nobody')", "customers_customer_id_not_empty"),
    ("INSERT INTO accounts (account_number, customer_id, account_type, balance) VALUES ('', %(customer)s, "
     "'CHECKING', 1.00)", "accounts_account_number_not_empty"),
    ("INSERT INTO transactions (transaction_id, amount, from_account, to_account) VALUES ('', 1.00, %(source)s, "
     "%(destination)s)", "transactions_transaction_id_not_empty"),
])
def test_an_empty_identifier_is_refused_at_insert(ledger, statement, constraint):
    """A message's identifiers have a character at least: a row with an empty one could never be cleared."""
    source, destination = ledger.accounts("100.00", "0.00")
    refused_and_rolled_back(ledger.conn, statement, psycopg.errors.CheckViolation, constraint,
                            {"customer": ledger.customer, "source": source, "destination": destination})


def test_an_amount_is_stored_exactly_as_given(ledger):
    accounts = ledger.accounts("100.00", "0.00")
    [transaction_id] = ledger.transactions((accounts[0], accounts[1], "0.10"))
    amount = ledger.conn.execute("SELECT amount FROM transactions WHERE transaction_id = %s", (transaction_id,)).fetchone()[0]
    assert amount == Decimal("0.10") and str(amount) == "0.10"


def test_a_balance_cannot_go_below_zero(ledger):
    [account] = ledger.accounts("10.00")
    with pytest.raises(psycopg.errors.CheckViolation, match="accounts_balance_not_negative"), \
            ledger.conn.transaction():
        ledger.conn.execute("SET LOCAL ledgerflow.settling = 'on'")  # as settle does: it alone changes balances
        ledger.conn.execute("UPDATE accounts SET balance = balance - 10.01 WHERE account_number = %s", (account,))


def test_only_a_settlement_changes_a_balance_so_that_it_stays_its_opening_balance_plus_its_postings(ledger):
    [account] = ledger.accounts("10.00")
    refused_and_rolled_back(ledger.conn, "UPDATE accounts SET balance = balance + 1000.00 WHERE account_number = %s",
                            psycopg.errors.CheckViolation, f"account {account}: its balance changes only with the "
                            "journal postings a settlement writes", (account,))
    with ledger.conn.transaction(force_rollback=True):
        ledger.conn.execute("SET LOCAL ledgerflow.settling = 'on'")
        ledger.conn.execute("UPDATE accounts SET balance = balance + 1000.00 WHERE account_number = %s", (account,))
        assert ledger.balances([account]) == {account: Decimal("1010.00")}


@pytest.mark.parametrize("settling", ["off", "on"])
def test_an_opening_balance_never_changes(ledger, settling):
    [account] = ledger.accounts("10.00")
    with pytest.raises(psycopg.errors.CheckViolation, match=f"account {account}: its opening balance cannot change"), \
            ledger.conn.transaction(force_rollback=True):
        ledger.conn.execute(f"SET LOCAL ledgerflow.settling = '{settling}'")
        ledger.conn.execute("UPDATE accounts SET opening_balance = opening_balance + 1000.00 "
                            "WHERE account_number = %s", (account,))


def test_an_account_opens_with_the_balance_it_is_created_with(ledger):
    [account] = ledger.accounts("123.45")
    opening = ledger.conn.execute("SELECT opening_balance FROM accounts WHERE account_number = %s", (account,)).fetchone()[0]
    assert opening == Decimal("123.45")
    refused_and_rolled_back(ledger.conn, "INSERT INTO accounts (account_number, customer_id, account_type, balance, "
                            "opening_balance) VALUES (%s, %s, 'CHECKING', 1000.00, 0.00)",
                            psycopg.errors.CheckViolation,
                            "opens with the balance it is inserted with, 1000.00, not 0.00",
                            (f"{ledger.prefix}-opened-apart", ledger.customer))


def test_the_audit_trail_is_append_only(ledger):
    accounts = ledger.accounts("100.00", "0.00")
    [transaction_id] = ledger.transactions((accounts[0], accounts[1], "1.00"), status="cleared")
    for statement in ("UPDATE transaction_audit SET changed_by = 'me' WHERE transaction_id = %s",
                      "DELETE FROM transaction_audit WHERE transaction_id = %s"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="transaction_audit is append-only"):
            ledger.conn.execute(statement, (transaction_id,))


def test_a_direct_illegal_update_is_refused_and_leaves_no_audit_row(ledger):
    accounts = ledger.accounts("100.00", "0.00")
    [transaction_id] = ledger.transactions((accounts[0], accounts[1], "1.00"))

    with pytest.raises(psycopg.errors.CheckViolation, match="illegal status transition pending -> settled"):
        ledger.conn.execute("UPDATE transactions SET status = 'settled' WHERE transaction_id = %s", (transaction_id,))

    assert ledger.statuses([transaction_id]) == {transaction_id: "pending"}
    assert ledger.audit(transaction_id) == []


def test_only_the_status_trigger_writes_the_audit_trail(ledger):
    accounts = ledger.accounts("100.00", "0.00")
    [transaction_id] = ledger.transactions((accounts[0], accounts[1], "1.00"))
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="written by the status-change trigger"):
        ledger.conn.execute("INSERT INTO transaction_audit (transaction_id, new_status, changed_by) "
                            "VALUES (%s, 'settled', 'me')", (transaction_id,))


@pytest.mark.parametrize(("statement", "error"), [
    ("UPDATE transactions SET status = 'rejected', status_reason_code = 'BECAUSE' WHERE transaction_id = %(id)s",
     "cannot be rejected with reason code BECAUSE"),
    ("INSERT INTO journal_postings (transaction_id, account_number, direction, amount, balance_after) "
     "VALUES (%(id)s, %(to)s, 'DEBIT', 1, 0)", "posting DEBIT of transaction .* matches no such transaction and account"),
    ("INSERT INTO journal_postings (transaction_id, account_number, direction, amount, balance_after) "
     "VALUES ('no-such-transaction', %(from)s, 'DEBIT', 1, 0)", "matches no such transaction"),
])
def test_statuses_reasons_and_postings_must_refer_to_what_exists(ledger, statement, error):
    source, destination = ledger.accounts("100.00", "0.00")
    # cleared: a pending transaction has no reason code at all
    [transaction_id] = ledger.transactions((source, destination, "1.00"), status="cleared")
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match=error):
        ledger.conn.execute(statement, {"id": transaction_id, "from": source, "to": destination})
    assert ledger.statuses([transaction_id]) == {transaction_id: "cleared"}


def test_a_transaction_with_a_history_keeps_its_id_and_cannot_be_deleted(ledger):
    source, destination = ledger.accounts("100.00", "0.00")
    [audited, fresh] = ledger.transactions((source, destination, "1.00"), (source, destination, "2.00"))
    ledger.conn.execute("UPDATE transactions SET status = 'rejected', status_reason_code = 'SAME_ACCOUNT' "
                        "WHERE transaction_id = %s", (audited,))

    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="audit trail and cannot be deleted"):
        ledger.conn.execute("DELETE FROM transactions WHERE transaction_id = ANY(%s)", ([audited, fresh],))
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="cannot change"):
        ledger.conn.execute("UPDATE transactions SET transaction_id = %s WHERE transaction_id = %s",
                            (f"{fresh}-renamed", fresh))
    ledger.conn.execute("DELETE FROM transactions WHERE transaction_id = %s", (fresh,))  # no history yet

    assert ledger.statuses([audited, fresh]) == {audited: "rejected"}


INSERT_IN_STATUS = ("INSERT INTO transactions (transaction_id, amount, from_account, to_account, status, "
                    "status_reason_code) VALUES (%(id)s || '-new', 1, %(from)s, %(to)s, %(status)s, %(reason)s)")


@pytest.mark.parametrize(("statement", "status", "reason", "error"), [
    # past clearance, or settled without journal postings, and neither audited
    (INSERT_IN_STATUS, "cleared", "CLEARED", "cannot be inserted cleared: a transaction enters the ledger pending"),
    (INSERT_IN_STATUS, "settled", "SETTLED", "cannot be inserted settled"),
    (INSERT_IN_STATUS, "approved", None, "cannot be inserted approved"),
    # produce takes up only the unpublished: this one would wait for ever
    ("INSERT INTO transactions (transaction_id, amount, from_account, to_account, published_at) "
     "VALUES (%(id)s || '-new', 1, %(from)s, %(to)s, now())", "pending", None, "cannot be inserted published"),
    # clear's decision would name the same reason, which the status trigger refuses: the batch would fail for good
    (INSERT_IN_STATUS, "pending", "CLEARED", "transactions_pending_without_a_reason"),
])
def test_a_transaction_enters_pending_and_has_no_reason_until_it_leaves_it(ledger, statement, status, reason, error):
    source, destination = ledger.accounts("100.00", "0.00")
    [transaction_id] = ledger.transactions((source, destination, "1.00"))
    refused_and_rolled_back(ledger.conn, statement, psycopg.errors.CheckViolation, error,
                            {"id": transaction_id, "from": source, "to": destination, "status": status,
                             "reason": reason})


@pytest.mark.parametrize("time", [None, "1999-01-01T00:00:00Z"])
def test_a_transaction_keeps_the_time_of_its_status_change(ledger, time):
    """clear republishes it as the outcome's cleared_at, which the contract requires; rewrite_records selects by it."""
    source, destination = ledger.accounts("100.00", "0.00")
    [transaction_id] = ledger.transactions((source, destination, "1.00"), status="cleared")
    refused_and_rolled_back(ledger.conn, "UPDATE transactions SET status_changed_at = %s WHERE transaction_id = %s",
                            psycopg.errors.CheckViolation, f"transaction {transaction_id} is cleared: its status time "
                            "changes only with its status", (time, transaction_id))


def test_a_description_and_a_status_message_fit_in_a_message(ledger):
    source, destination = ledger.accounts("100.00", "0.00")
    [transaction_id] = ledger.transactions((source, destination, "1.00"))
    long = "x" * 1001
    refused_and_rolled_back(ledger.conn, "UPDATE transactions SET description = %s WHERE transaction_id = %s",
                            psycopg.errors.CheckViolation, "transactions_description_within_a_message",
                            (long, transaction_id))
    refused_and_rolled_back(ledger.conn, "UPDATE transactions SET status = 'rejected', status_reason_code = "
                            "'REVIEW_DECLINED', status_message = %s WHERE transaction_id = %s",
                            psycopg.errors.CheckViolation, "transactions_status_message_within_a_message",
                            (long, transaction_id))
    ledger.conn.execute("UPDATE transactions SET status = 'rejected', status_reason_code = 'REVIEW_DECLINED', "
                        "status_message = %s, description = %s WHERE transaction_id = %s",
                        (long[1:], long[1:], transaction_id))
    assert ledger.statuses([transaction_id]) == {transaction_id: "rejected"}


@pytest.mark.parametrize(("status", "change"), [
    # clear's decision would name the same reason, which the status trigger refuses: the batch would fail for good
    ("pending", "status_reason_code = 'CLEARED'"),
    # settle's own reason, SETTLED, would then not say why the transaction was settled: settle would fail for good
    ("cleared", "status_reason_code = 'SETTLED'"),
    # clear could not republish an outcome without a reason
    ("cleared", "status_reason_code = NULL"),
    # the ledger, and the Redis record settle rewrites from it, would say why otherwise than the audit trail
    ("rejected", "status_reason_code = 'INSUFFICIENT_FUNDS'"),
    ("rejected", "status_message = 'declined on the phone'"),
])
def test_a_reason_and_message_change_only_with_their_status(ledger, status, change):
    source, destination = ledger.accounts("100.00", "0.00")
    [transaction_id] = ledger.transactions((source, destination, "1.00"), status=status)
    refused_and_rolled_back(ledger.conn, f"UPDATE transactions SET {change} WHERE transaction_id = %s",
                            psycopg.errors.CheckViolation, f"transaction {transaction_id} is {status}: its reason "
                            "code and message change only with its status, as transaction_audit records them",
                            (transaction_id,))


@pytest.mark.parametrize(("status", "reason"), [("pending", "CLEARED"), ("cleared", "SETTLED")])
def test_a_status_change_by_hand_names_a_reason_of_its_new_status(ledger, status, reason):
    source, destination = ledger.accounts("100.00", "0.00")
    [transaction_id] = ledger.transactions((source, destination, "1.00"), status=status)
    refused_and_rolled_back(ledger.conn, "UPDATE transactions SET status = 'rejected', status_reason_code = %s "
                            "WHERE transaction_id = %s", psycopg.errors.ForeignKeyViolation,
                            f"cannot be rejected with reason code {reason}", (reason, transaction_id))


@pytest.mark.parametrize("statement", [
    "DELETE FROM reason_codes WHERE reason_code = 'SETTLED'",
    "UPDATE transaction_statuses SET terminal = false WHERE status = 'settled'",
    "INSERT INTO transaction_status_transitions (from_status, to_status) VALUES ('pending', 'settled')",
    "TRUNCATE transaction_status_transitions CASCADE",
    "UPDATE transaction_status_reasons SET status = 'cleared' WHERE reason_code = 'SETTLED'",
])
def test_the_statuses_transitions_and_reason_codes_change_only_by_migration(pg, statement):
    refused_and_rolled_back(pg, statement, psycopg.errors.InsufficientPrivilege, "restates the domain core")


def test_the_journal_is_append_only_and_nothing_with_a_history_can_be_truncated(ledger):
    source, destination = ledger.accounts("100.00", "0.00")
    [transaction_id] = ledger.transactions((source, destination, "1.00"), status="cleared")
    settle(ledger.conn, [transaction_id], AuditContext(changed_by="tests"))
    for statement in ("UPDATE journal_postings SET account_number = %(to)s WHERE transaction_id = %(id)s",
                      "DELETE FROM journal_postings WHERE transaction_id = %(id)s",
                      "TRUNCATE journal_postings", "TRUNCATE transaction_audit"):
        refused_and_rolled_back(ledger.conn, statement, psycopg.errors.InsufficientPrivilege, "is append-only",
                                {"id": transaction_id, "to": destination})
    refused_and_rolled_back(ledger.conn, "TRUNCATE transactions", psycopg.errors.ForeignKeyViolation,
                            "cannot be truncated")
    assert ledger.reconciliation_gaps([source, destination]) == []


def test_the_transfer_is_fixed_from_the_insert_on(ledger):
    # clear records a decision after produce published the transfer: an edit in between would have the
    # decision recorded for a transfer it was not made for
    source, destination, other = ledger.accounts("100.00", "0.00", "0.00")
    [pending] = ledger.transactions((source, destination, "1.00"))
    [cleared] = ledger.transactions((source, destination, "2.00"), status="cleared")

    for transaction_id in (pending, cleared):
        for change in ("amount = 3.00", "from_account = %(other)s", "to_account = %(other)s"):
            with pytest.raises(psycopg.errors.CheckViolation, match="amount and accounts cannot change"):
                ledger.conn.execute(f"UPDATE transactions SET {change} WHERE transaction_id = %(id)s",
                                    {"id": transaction_id, "other": other})
    ledger.conn.execute("UPDATE transactions SET amount = 1.00, description = 'noted' WHERE transaction_id = %s",
                        (pending,))  # the same transfer: allowed


def test_every_status_change_is_stamped_with_its_database_transactions_time(ledger):
    """The pipeline's statements stamp status_changed_at themselves; any other writer's status change is
    stamped by the database, whatever stamp it sets."""
    source, destination = ledger.accounts("100.00", "0.00")
    unstamped, backdated, decided = ledger.transactions(*[(source, destination, "1.00")] * 3)

    def stamp(transaction_id):
        return ledger.conn.execute("SELECT status_changed_at FROM transactions WHERE transaction_id = %s",
                                   (transaction_id,)).fetchone()[0]

    with ledger.conn.transaction():
        [now] = ledger.conn.execute("SELECT now()").fetchone()
        ledger.conn.execute("UPDATE transactions SET status = 'cleared', status_reason_code = 'CLEARED' "
                            "WHERE transaction_id = %s", (unstamped,))
        ledger.conn.execute("UPDATE transactions SET status = 'cleared', status_reason_code = 'CLEARED', "
                            "status_changed_at = '2000-01-01' WHERE transaction_id = %s", (backdated,))
    assert (stamp(unstamped), stamp(backdated)) == (now, now)

    decision = transition(ledger.conn, [StatusChange(decided, Status.PENDING, Status.CLEARED, ReasonCode.CLEARED,
                                                      "risk score 0 is below 40")], AuditContext(changed_by="tests"))
    assert decision.applied == [decided]
    assert stamp(decided) == decision.changed_at
    assert stamp(decided) > now

    settlement = settle(ledger.conn, [unstamped, backdated], AuditContext(changed_by="tests"))
    assert (stamp(unstamped), stamp(backdated)) == (settlement.settled_at, settlement.settled_at)
    assert settlement.settled_at > now


def test_a_status_change_by_hand_must_say_why(ledger):
    """Clear republishes the outcome the ledger records for a transaction that is no longer pending, and an
    outcome needs a reason code: without one, every batch holding the transaction failed, again and again. The
    reason is the change's own: one kept from the status before would be published and audited as this one's."""
    source, destination = ledger.accounts("100.00", "0.00")
    [pending] = ledger.transactions((source, destination, "1.00"))
    [cleared] = ledger.transactions((source, destination, "2.00"), status="cleared")  # for the reason CLEARED

    for transaction_id, old in ((pending, "pending"), (cleared, "cleared")):
        refused_and_rolled_back(ledger.conn, "UPDATE transactions SET status = 'rejected' WHERE transaction_id = %s",
                                psycopg.errors.CheckViolation,
                                f"{old} -> rejected of transaction {transaction_id} does not say why",
                                (transaction_id,))
        ledger.conn.execute("UPDATE transactions SET status = 'rejected', status_reason_code = 'REVIEW_DECLINED' "
                            "WHERE transaction_id = %s", (transaction_id,))

    assert ledger.statuses([pending, cleared]) == {pending: "rejected", cleared: "rejected"}
    assert [row[:3] for row in ledger.audit(pending)] == [("pending", "rejected", "REVIEW_DECLINED")]
    assert [row[:3] for row in ledger.audit(cleared)][-1] == ("cleared", "rejected", "REVIEW_DECLINED")


def test_only_a_settlement_settles(ledger):
    """cleared -> settled is a legal transition, but a transaction settled by hand has no journal postings, and
    its settlement record (balances before and after) cannot be written: settle's batches holding it failed."""
    source, destination = ledger.accounts("100.00", "0.00")
    [by_hand, by_settlement] = ledger.transactions((source, destination, "1.00"), (source, destination, "2.00"),
                                                   status="cleared")

    refused_and_rolled_back(ledger.conn, "UPDATE transactions SET status = 'settled', status_reason_code = 'SETTLED' "
                            "WHERE transaction_id = %s", psycopg.errors.CheckViolation,
                            f"transaction {by_hand} can be settled only by a settlement", (by_hand,))
    # beside a transition that is illegal in any case, that is the error reported, whichever row comes first
    [still_pending] = ledger.transactions((source, destination, "3.00"))
    refused_and_rolled_back(ledger.conn, "UPDATE transactions SET status = 'settled', status_reason_code = 'SETTLED' "
                            "WHERE transaction_id = ANY(%s)", psycopg.errors.CheckViolation,
                            f"illegal status transition pending -> settled for transaction {still_pending}",
                            ([by_hand, still_pending],))

    settlement = settle(ledger.conn, [by_settlement], AuditContext(changed_by="tests"))

    assert [o.transfer.transaction_id for o in settlement.outcomes] == [by_settlement]
    assert ledger.statuses([by_hand, by_settlement]) == {by_hand: "cleared", by_settlement: "settled"}
    assert ledger.reconciliation_gaps([source, destination]) == []


@pytest.mark.parametrize(("status", "amount", "settling", "error", "match"), [
    # a posting by hand for a transaction settle has yet to settle would fail its settlement on the journal's
    # unique key at every redelivery; one of a rejected transaction, or of another amount, moves no balance
    ("cleared", "30.00", "on", psycopg.errors.CheckViolation, "the transaction is cleared, and only its settlement"),
    ("rejected", "30.00", "on", psycopg.errors.CheckViolation, "the transaction is rejected, and only its settlement"),
    ("settled", "31.00", "on", psycopg.errors.CheckViolation, "is of 31.00, the transaction of 30.00"),
    ("settled", "30.00", "off", psycopg.errors.InsufficientPrivilege, "written by a settlement, and by nothing else"),
    # settled without postings before (the original system's rows): no posting comes after
    ("settled before", "30.00", "on", psycopg.errors.CheckViolation, "it was settled before, and only its settlement"),
])
def test_only_a_settlement_posts_and_only_the_amount_of_the_transaction_it_settles(
        ledger, status, amount, settling, error, match):
    source, destination = ledger.accounts("100.00", "0.00")
    [transaction_id] = ledger.transactions((source, destination, "30.00"),
                                           status="rejected" if status == "rejected" else "cleared")
    post = ("INSERT INTO journal_postings (transaction_id, account_number, direction, amount, balance_after) "
            "VALUES (%s, %s, 'DEBIT', %s, 70.00)")
    settle_by_hand = ("UPDATE transactions SET status = 'settled', status_reason_code = 'SETTLED' "
                      "WHERE transaction_id = %s")
    if status == "settled before":
        with ledger.conn.transaction():
            ledger.conn.execute("SET LOCAL ledgerflow.settling = 'on'")
            ledger.conn.execute(settle_by_hand, (transaction_id,))
    with ledger.conn.transaction(force_rollback=True):
        ledger.conn.execute("SET LOCAL ledgerflow.settling = 'on'")
        if status == "settled":
            ledger.conn.execute(settle_by_hand, (transaction_id,))
        ledger.conn.execute(f"SET LOCAL ledgerflow.settling = '{settling}'")
        with pytest.raises(error, match=match), ledger.conn.transaction():
            ledger.conn.execute(post, (transaction_id, source, Decimal(amount)))
        if status == "settled":  # what a settlement writes passes
            ledger.conn.execute("SET LOCAL ledgerflow.settling = 'on'")
            ledger.conn.execute(post, (transaction_id, source, Decimal("30.00")))


def test_every_transaction_not_yet_terminal_is_listed_with_what_it_waits_for(ledger):
    source, destination = ledger.accounts("100.00", "0.00")
    unpublished, published = ledger.transactions(*[(source, destination, "1.00")] * 2)
    ledger.conn.execute("UPDATE transactions SET published_at = now() WHERE transaction_id = %s", (published,))
    cleared, cleared_unpublished = ledger.transactions(*[(source, destination, "1.00")] * 2, status="cleared")
    with_conditions = ledger.transactions((source, destination, "1.00"), status="cleared_with_conditions")
    # published, then cleared, as clear does; the other one was cleared by hand before produce published it
    ledger.conn.execute("UPDATE transactions SET published_at = now() WHERE transaction_id = ANY(%s)",
                        ([cleared, *with_conditions],))
    approved, approved_with_conditions, in_review = ledger.transactions(*[(source, destination, "1.00")] * 3,
                                                                        status="requires_manual_review")
    ledger.conn.execute("UPDATE transactions SET status = 'cleared', status_reason_code = 'REVIEW_APPROVED' "
                        "WHERE transaction_id = %s", (approved,))
    ledger.conn.execute("UPDATE transactions SET status = 'cleared_with_conditions', "
                        "status_reason_code = 'REVIEW_APPROVED_WITH_CONDITIONS' WHERE transaction_id = %s",
                        (approved_with_conditions,))
    rejected = ledger.transactions((source, destination, "1.00"), status="rejected")
    ids = [unpublished, published, cleared, cleared_unpublished, *with_conditions, approved, approved_with_conditions,
           in_review, *rejected]

    waiting = {transaction_id: waits_for for transaction_id, waits_for in ledger.conn.execute(
        "SELECT transaction_id, waits_for FROM transactions_waiting WHERE transaction_id = ANY(%s)", (ids,))}

    assert waiting == {unpublished: "produce", published: "clear", cleared: "settle",
                       cleared_unpublished: "window re-drive", with_conditions[0]: "settle",
                       approved: "window re-drive", approved_with_conditions: "window re-drive",
                       in_review: "manual review"}
    # and the time each was created, by which a re-drive of its hour selects it
    created = "SELECT transaction_id, created_at FROM {} WHERE transaction_id = ANY(%s)"
    assert dict(ledger.conn.execute(created.format("transactions_waiting"), (ids,)).fetchall()) == {
        transaction_id: created_at for transaction_id, created_at in ledger.conn.execute(
            created.format("transactions"), (ids,)) if transaction_id in waiting}


def test_a_pending_transaction_waits_from_its_publication_and_one_past_pending_from_its_last_status_change(ledger):
    source, destination = ledger.accounts("100.00", "0.00")
    unpublished, published, in_review = ledger.transactions(*[(source, destination, "1.00")] * 3)
    ledger.conn.execute("UPDATE transactions SET created_at = now() - interval '20 minutes' "
                        "WHERE transaction_id = ANY(%s)", ([unpublished, published, in_review],))
    # produce was held up for 20 minutes, then published one
    ledger.conn.execute("UPDATE transactions SET published_at = now() WHERE transaction_id = %s", (published,))
    ledger.move_by_hand([in_review], "requires_manual_review")

    since = dict(ledger.conn.execute(
        "SELECT w.transaction_id, w.since = CASE w.transaction_id WHEN %s THEN t.created_at WHEN %s THEN t.published_at "
        "ELSE t.status_changed_at END FROM transactions_waiting w JOIN transactions t USING (transaction_id) "
        "WHERE w.transaction_id = ANY(%s)", (unpublished, published, [unpublished, published, in_review])).fetchall())

    assert since == {unpublished: True, published: True, in_review: True}
    # the published one has waited for clear for moments, not since its creation
    assert ledger.conn.execute("SELECT since > now() - interval '1 minute' FROM transactions_waiting "
                               "WHERE transaction_id = %s", (published,)).fetchone() == (True,)


@pytest.mark.parametrize(("status", "reason_code"), [("cleared", "CLEARED"),
                                                     ("cleared_with_conditions", "CLEARED_WITH_CONDITIONS"),
                                                     ("rejected", "INSUFFICIENT_FUNDS")])
def test_a_transfer_leaves_manual_review_only_with_a_review_reason(ledger, status, reason_code):
    source, destination = ledger.accounts("100.00", "0.00")
    [in_review] = ledger.transactions((source, destination, "1.00"), status="requires_manual_review")

    # no stage publishes a decision made by hand: with the pipeline's reason, the waiting view would say settle
    refused_and_rolled_back(ledger.conn, "UPDATE transactions SET status = %s, status_reason_code = %s "
                                         "WHERE transaction_id = %s", psycopg.errors.CheckViolation,
                            f"transaction {in_review} cannot leave manual review {status} with reason code "
                            f"{reason_code}: a review decides with REVIEW_APPROVED", (status, reason_code, in_review))
    review_reason = {"cleared": "REVIEW_APPROVED", "cleared_with_conditions": "REVIEW_APPROVED_WITH_CONDITIONS",
                     "rejected": "REVIEW_DECLINED"}[status]
    ledger.conn.execute("UPDATE transactions SET status = %s, status_reason_code = %s WHERE transaction_id = %s",
                        (status, review_reason, in_review))
    assert ledger.statuses([in_review]) == {in_review: status}


@pytest.mark.parametrize(("status", "reason_code", "error", "refusal"), [
    ("pending", None, psycopg.errors.CheckViolation, "illegal status transition requires_manual_review -> pending"),
    ("settled", "SETTLED", psycopg.errors.CheckViolation, "illegal status transition requires_manual_review -> settled"),
    ("rejected", None, psycopg.errors.ForeignKeyViolation, "cannot be rejected with reason code NULL")])
def test_a_change_out_of_review_that_no_review_reason_would_mend_is_refused_for_what_is_wrong_with_it(
        ledger, status, reason_code, error, refusal):
    source, destination = ledger.accounts("100.00", "0.00")
    [in_review] = ledger.transactions((source, destination, "1.00"), status="requires_manual_review")

    refused_and_rolled_back(ledger.conn, "UPDATE transactions SET status = %s, status_reason_code = %s "
                                         "WHERE transaction_id = %s", error, refusal, (status, reason_code, in_review))
