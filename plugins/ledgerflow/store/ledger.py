"""The ledger in PostgreSQL: guarded status transitions and atomic settlement, set-based.

Functions take a psycopg 3 connection (PostgresHook(...).get_conn()) in autocommit mode and run
each unit of work in one database transaction. The database audits every status change itself
(trigger on transactions); these functions only name the actor, via AuditContext.

A list of transaction or account ids travels as one binary array (`ANY(%b)`, here and in the pipeline's other
queries): in text format psycopg quotes it element by element in Python, 9 ms a round trip for 10,000 ids
against 3 ms.
"""

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import msgspec
from psycopg.pq import TransactionStatus

from ledgerflow.core.audit import AuditContext
from ledgerflow.core.reasons import ReasonCode
from ledgerflow.core.settlement import Refused, Settled, Transfer, settle_in_order
from ledgerflow.core.states import SETTLEABLE, Status, StatusChange

SET_AUDIT_CONTEXT = "SELECT set_config(name, value, true) FROM unnest(%s::text[], %s::text[]) AS s(name, value)"

# A batch's rows travel as one JSON document (see _as_json) rather than as one array per column. A status change
# stamps status_changed_at itself, as the database would (sql/0013), without the trigger's call per row.
# A stage decides a transaction from a message, so it was published: a produce run killed between the broker's
# acknowledgement and its record of it leaves it unpublished on paper, and the next run takes only pending ones.
# (Set once, as produce sets it: the unchanged value keeps the update HOT.)
APPLY_STATUS_CHANGES = """
UPDATE transactions t
   SET status = c.new_status, status_reason_code = c.reason_code, status_message = c.message,
       status_changed_at = now(), risk_score = coalesce(c.risk_score, t.risk_score),
       available_balance = coalesce(c.available_balance, t.available_balance),
       published_at = coalesce(t.published_at, now())
  FROM json_to_recordset(%s::json) AS c(transaction_id text, expected text, new_status text, reason_code text,
                                        message text, risk_score smallint, available_balance numeric)
 WHERE t.transaction_id = c.transaction_id AND t.status = c.expected
RETURNING t.transaction_id, t.status_changed_at"""

# Every writer of a batch of transactions locks its rows in transaction_id order before it changes them
# (produce marking them published, clear deciding them, settle settling them, possibly the same rows at
# the same moment), so no two writers can each hold a row the other waits for. The locks are NO KEY
# UPDATE: these writers change statuses, marks and balances, never a key, so the key-share locks of
# foreign-key checks do not block them. An INSERT of a transfer key-share-locks both its accounts, in
# its own order; had settlement waited for those, inserts and settlement would deadlock under load.
LOCK_IN_ORDER = """
SELECT FROM transactions WHERE transaction_id = ANY(%b) ORDER BY transaction_id FOR NO KEY UPDATE"""

LOCK_IN_ORDER_READING_STATUSES = """
SELECT transaction_id, status FROM transactions
 WHERE transaction_id = ANY(%b) ORDER BY transaction_id FOR NO KEY UPDATE"""

# now() is the database transaction's timestamp: the settlement time every row of the batch records.
LOCK_TRANSACTIONS = """
SELECT transaction_id, status, from_account, to_account, amount, risk_score, now() FROM transactions
 WHERE transaction_id = ANY(%b) ORDER BY transaction_id FOR NO KEY UPDATE"""

LOCK_ACCOUNTS = """
SELECT account_number, balance, status FROM accounts
 WHERE account_number = ANY(%b) ORDER BY account_number FOR NO KEY UPDATE"""

UPDATE_BALANCES = """
UPDATE accounts a SET balance = u.balance
  FROM unnest(%s::text[], %s::numeric[]) AS u(account_number, balance)
 WHERE a.account_number = u.account_number"""

# The transfers of a batch marked settled, in one statement: the message is built from the row, not sent
# with it (29 of the 168 ms the status changes of 10,000 settlements took as a JSON recordset).
MARK_SETTLED = """
UPDATE transactions t
   SET status = %s, status_reason_code = %s, status_changed_at = now(),
       status_message = 'settled ' || t.amount || ' from ' || t.from_account || ' to ' || t.to_account
 WHERE t.transaction_id = ANY(%b) AND t.status = ANY(%b)"""

# COPY inserts a batch's postings page by page (one WAL record and one buffer lock per page, not per row):
# 133 against 161 ms for the 20,000 postings of a 10,000-transfer batch as one INSERT ... SELECT.
COPY_POSTINGS = "COPY journal_postings (transaction_id, account_number, direction, amount, balance_after) FROM STDIN"

SELECT_STATUSES = "SELECT transaction_id, status FROM transactions WHERE transaction_id = ANY(%b)"

# Accounts with their customers: the parties produce's messages and settle's Redis records describe.
SELECT_ACCOUNT_HOLDERS = """
SELECT a.account_number, a.account_type, a.balance, c.customer_id, c.name, c.risk_level, a.status
  FROM accounts a JOIN customers c ON c.customer_id = a.customer_id
 WHERE a.account_number = ANY(%b)"""

RECORD_MISSING_RISK_SCORES = """
UPDATE transactions t SET risk_score = s.risk_score
  FROM unnest(%s::text[], %s::smallint[]) AS s(transaction_id, risk_score)
 WHERE t.transaction_id = s.transaction_id AND t.risk_score IS NULL"""

# msgspec writes a Decimal as a JSON string, which PostgreSQL reads into numeric exactly.
_JSON = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class TransitionResult:
    applied: list[str]
    duplicates: list[str]  # not in the expected status any more (or unknown): nothing was changed
    changed_at: datetime | None = None  # the status_changed_at the applied changes recorded


@dataclass(frozen=True, slots=True)
class SettlementResult:
    outcomes: list[Settled | Refused]
    not_settleable: dict[str, str]  # transaction id -> its status (settled already, rejected, ...)
    # What the ledger recorded with the outcomes, so their read model needs no second query:
    settled_from: dict[str, Status]  # what each outcome's transaction was: cleared or cleared_with_conditions
    refusals: dict[str, StatusChange]  # the transitions into rejected, with their reasons
    risk_scores: dict[str, int | None]
    settled_at: datetime | None  # the time the settled and rejected rows record (the transaction's now())


@dataclass(frozen=True, slots=True)
class AccountHolder:
    """An account, its balance and status, and the customer who holds it."""
    account_type: str
    balance: Decimal
    customer_id: str
    name: str
    risk_level: str
    status: str


def account_holders(conn, account_numbers: Iterable[str]) -> dict[str, AccountHolder]:
    """The given accounts with their customers, in one query, by account number. Every account has a
    customer (a foreign key), so every existing account is in the result."""
    return {number: AccountHolder(*holder)
            for number, *holder in conn.execute(SELECT_ACCOUNT_HOLDERS, (list(account_numbers),)).fetchall()}


def statuses(conn, transaction_ids: list[str]) -> dict[str, Status]:
    """The given transactions' statuses, by id; an id the ledger does not have is left out."""
    return {i: Status(status) for i, status in conn.execute(SELECT_STATUSES, (transaction_ids,)).fetchall()}


def record_missing_risk_scores(conn, scores: dict[str, int]) -> None:
    """Record the given risk scores of transactions that have none; a transaction with a score keeps it."""
    with conn.transaction(), conn.cursor() as cursor:
        cursor.execute(LOCK_IN_ORDER, (list(scores),))
        cursor.execute(RECORD_MISSING_RISK_SCORES, (list(scores), list(scores.values())))


def _set_audit_context(cursor, context: AuditContext, settling: bool = False) -> None:
    settings = context.settings()
    if settling:  # the database lets only a settlement, which writes the journal postings, settle (sql/0014)
        settings["ledgerflow.settling"] = "on"
    cursor.execute(SET_AUDIT_CONTEXT, (list(settings), list(settings.values())))


def _first_per_transaction(items: Iterable, key) -> list:
    seen: dict[str, object] = {}
    for item in items:
        seen.setdefault(key(item), item)
    return list(seen.values())


def _as_json(rows: list[dict]) -> str:
    """A batch's rows as one JSON array for json_to_recordset: psycopg adapts arrays element by element
    in Python, which took 49 ms for four columns of 10,000 values, against 21 ms this way."""
    return _JSON.encode(rows).decode()


def _apply_status_changes(cursor, changes: Sequence[StatusChange]) -> TransitionResult:
    cursor.execute(APPLY_STATUS_CHANGES, (_as_json([
        {"transaction_id": c.transaction_id, "expected": c.expected, "new_status": c.new,
         "reason_code": c.reason_code, "message": c.message, "risk_score": c.risk_score,
         "available_balance": c.available_balance} for c in changes]),))
    applied = dict(cursor.fetchall())
    return TransitionResult(applied=[c.transaction_id for c in changes if c.transaction_id in applied],
                            duplicates=[c.transaction_id for c in changes if c.transaction_id not in applied],
                            changed_at=next(iter(applied.values()), None))


def transition(conn, changes: Iterable[StatusChange], context: AuditContext, *,
               decide_again: Callable[[dict[str, Status]], Iterable[StatusChange]] | None = None) -> TransitionResult:
    """Apply guarded transitions in one statement and one database transaction. A change whose
    transaction is no longer in its expected status is reported as a duplicate and changes nothing.

    Changes decided together may depend on each other (a transfer cleared reserves funds the next one from its
    source cannot have). If some transactions have left their expected status (or the ledger), and
    `decide_again` is given, it is called under the rows' locks with the statuses of those in the ledger, and of
    the changes it returns, those of the given transactions still in their expected status are applied instead."""
    changes = _first_per_transaction(changes, lambda c: c.transaction_id)
    ids = [c.transaction_id for c in changes]
    with conn.transaction(), conn.cursor() as cursor:
        _set_audit_context(cursor, context)
        if decide_again is None:
            cursor.execute(LOCK_IN_ORDER, (ids,))
            return _apply_status_changes(cursor, changes)
        cursor.execute(LOCK_IN_ORDER_READING_STATUSES, (ids,))
        current = {transaction_id: Status(status) for transaction_id, status in cursor.fetchall()}
        if all(current.get(c.transaction_id) == c.expected for c in changes):
            return _apply_status_changes(cursor, changes)
        locked = set(ids)  # only rows locked in order may change: a row locked out of order could deadlock
        result = _apply_status_changes(cursor, [
            c for c in _first_per_transaction(decide_again(current), lambda c: c.transaction_id)
            if c.transaction_id in locked and current.get(c.transaction_id) == c.expected])
        applied = set(result.applied)
        return TransitionResult(result.applied, [i for i in ids if i not in applied], result.changed_at)


class LockedSettlement:
    """A settlement's first half: a database transaction open on `conn` with the batch's transactions
    locked, read and marked settled (see below). complete() settles them and commits; abandon() rolls
    back. A caller may lock the next batch on a second connection while this one completes: the accounts,
    and so the balances each batch starts from, are locked and read only in complete(), so batches
    completed in order apply their transfers in order, whichever locked its transactions first.
    complete() waits for no transaction row, only for accounts: a later batch's lock may wait for this
    settlement (a transaction in both), never the other way round, so the two cannot deadlock, even
    though PostgreSQL could not see such a wait through the caller's threads.

    Almost every transfer settles, so the first half also marks every settleable transaction settled (its
    transition and audit row) while the batch before may still hold the accounts, and complete(), which
    holds them, writes only what needs the balances (about half of the work that was in complete()).
    The mark is made after a savepoint: should the balances refuse a transfer, complete() rolls back to it
    (which also releases the accounts it locked since), locks the accounts again and marks the settled and
    the refused transfers as the balances it then reads decide, whatever the first reading said. The
    transactions stay locked throughout, as they were locked before the savepoint.

    The rows' timestamps (status_changed_at, posted_at, the audit's changed_at) are the database
    transaction's start, so the moment the batch was locked: up to one settlement earlier than its commit."""

    _EVERY_TRANSFER_SETTLES = "every_transfer_settles"

    def __init__(self, conn, transaction_ids: Iterable[str], context: AuditContext):
        if conn.info.transaction_status != TransactionStatus.IDLE:
            raise RuntimeError("a settlement needs a connection of its own: this one is in a transaction")
        self.conn = conn
        self.ordered_ids = list(dict.fromkeys(transaction_ids))
        self.open = True
        # read committed: complete() must read the balances the previous settlement committed meanwhile
        conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
        with self._rolled_back_on_error(), conn.cursor() as cursor:
            _set_audit_context(cursor, context, settling=True)
            cursor.execute(LOCK_TRANSACTIONS, (self.ordered_ids,))
            self.statuses, self.recorded, self.risk_scores, self.settled_at = {}, {}, {}, None
            for transaction_id, status, from_account, to_account, amount, risk_score, self.settled_at \
                    in cursor.fetchall():
                self.statuses[transaction_id] = Status(status)
                self.recorded[transaction_id] = Transfer(transaction_id, from_account, to_account, amount)
                self.risk_scores[transaction_id] = risk_score
            self.settleable = [self.recorded[i] for i in self.ordered_ids if self.statuses.get(i) in SETTLEABLE]
            if self.settleable:
                cursor.execute(f"SAVEPOINT {self._EVERY_TRANSFER_SETTLES}")
                _mark_settled(cursor, [t.transaction_id for t in self.settleable])

    @contextmanager
    def _rolled_back_on_error(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            with suppress(Exception):  # the error that got here is the one to report
                self.abandon()
            raise

    def abandon(self) -> None:
        """Roll back, unless the settlement is over (completed or abandoned): nothing of it stays."""
        if self.open:
            self.open = False
            self.conn.execute("ROLLBACK")

    def complete(self) -> SettlementResult:
        """Lock the accounts in a fixed order, apply each transfer as the database records it (the message
        only says which and in what order), write balances and journal postings (and, if a transfer was
        refused, the settled and rejected transitions as they are), and commit. A transaction that is not
        cleared (or cleared with conditions) any more is skipped, so a replayed batch settles nothing twice."""
        if not self.open:
            raise RuntimeError("this settlement is over")
        with self._rolled_back_on_error(), self.conn.cursor() as cursor:
            result = self._apply(cursor)
            cursor.execute("COMMIT")
            if cursor.statusmessage != "COMMIT":  # PostgreSQL answers ROLLBACK for a failed transaction
                raise RuntimeError(f"the settlement did not commit: {cursor.statusmessage}")
        self.open = False
        return result

    def _apply(self, cursor) -> SettlementResult:
        statuses, settleable = self.statuses, self.settleable
        not_settleable = {i: str(statuses.get(i, "unknown")) for i in self.ordered_ids
                          if statuses.get(i) not in SETTLEABLE}
        if not settleable:
            return SettlementResult([], not_settleable, {}, {}, {}, self.settled_at)
        balances, outcomes = _lock_accounts_and_settle(cursor, settleable)
        marks_undone = any(isinstance(o, Refused) for o in outcomes)
        if marks_undone:
            cursor.execute(f"ROLLBACK TO SAVEPOINT {self._EVERY_TRANSFER_SETTLES}")
            # The accounts were unlocked meanwhile: a settlement waiting for them may have moved their balances
            # either way, and their statuses may have changed, so this second reading, not the first, decides
            # what settles and what is refused.
            balances, outcomes = _lock_accounts_and_settle(cursor, settleable)
        settled = [o for o in outcomes if isinstance(o, Settled)]
        refusals = {o.transfer.transaction_id: _refusal(o, statuses[o.transfer.transaction_id])
                    for o in outcomes if isinstance(o, Refused)}
        if marks_undone:
            _mark_settled(cursor, [o.transfer.transaction_id for o in settled])
        if refusals and _apply_status_changes(cursor, list(refusals.values())).duplicates:
            raise RuntimeError("a refused transfer's transaction changed under its lock")

        cursor.execute(UPDATE_BALANCES, (list(balances), list(balances.values())))
        with cursor.copy(COPY_POSTINGS) as copy:
            for o in settled:
                transfer = o.transfer
                copy.write_row((transfer.transaction_id, transfer.from_account, "DEBIT", transfer.amount,
                                o.from_balance_after))
                copy.write_row((transfer.transaction_id, transfer.to_account, "CREDIT", transfer.amount,
                                o.to_balance_after))
        return SettlementResult(outcomes, not_settleable,
                                {t.transaction_id: statuses[t.transaction_id] for t in settleable}, refusals,
                                {t.transaction_id: self.risk_scores[t.transaction_id] for t in settleable},
                                self.settled_at)


def _lock_accounts_and_settle(cursor, transfers: list[Transfer]) -> tuple[dict[str, Decimal], list[Settled | Refused]]:
    """Lock the transfers' accounts in a fixed order and apply the transfers in order to their balances, as their
    statuses allow; returns the balances that changed and the outcomes."""
    cursor.execute(LOCK_ACCOUNTS, (sorted({n for t in transfers for n in (t.from_account, t.to_account)}),))
    balances, account_statuses = {}, {}
    for number, balance, status in cursor.fetchall():
        balances[number], account_statuses[number] = balance, status
    opening = dict(balances)
    outcomes = settle_in_order(balances, account_statuses, transfers)
    return {number: balance for number, balance in balances.items() if balance != opening[number]}, outcomes


def _mark_settled(cursor, transaction_ids: list[str]) -> None:
    cursor.execute(MARK_SETTLED, (Status.SETTLED.value, ReasonCode.SETTLED.value, transaction_ids,
                                  [s.value for s in SETTLEABLE]))
    if cursor.rowcount != len(transaction_ids):  # the rows are locked: only a broken invariant gets here
        raise RuntimeError(f"marked {cursor.rowcount} of {len(transaction_ids)} transactions settled")


def settle(conn, transaction_ids: Iterable[str], context: AuditContext) -> SettlementResult:
    """Settle a batch atomically, in the given order, in one database transaction (see LockedSettlement)."""
    return LockedSettlement(conn, transaction_ids, context).complete()


def _refusal(outcome: Refused, status: Status) -> StatusChange:
    return StatusChange(outcome.transfer.transaction_id, status, Status.REJECTED, outcome.reason_code, outcome.message,
                        available_balance=outcome.available_balance)
