"""clear: validate and decide a batch of published transactions, record the outcomes, publish them."""

from dataclasses import replace
from decimal import Decimal

from confluent_kafka import Message

from ledgerflow.core.accounts import Account
from ledgerflow.core.audit import AuditContext
from ledgerflow.core.config import RulesConfig
from ledgerflow.core.messages import (PUBLISHED_CLEARANCE_OUTCOMES, ClearedV1, Customer, InvalidMessage,
                                      TransactionV1, decode_transaction, encode)
from ledgerflow.core.reasons import ReasonCode
from ledgerflow.core.rules import ClearanceRequest, decide_clearance, risk_score
from ledgerflow.core.states import Status, StatusChange
from ledgerflow.pipeline import BatchResult
from ledgerflow.pipeline.produce import customers_of
from ledgerflow.store.kafka import dead_letter, publish
from ledgerflow.store.ledger import account_holders, record_missing_risk_scores, transition

# The statuses of a transfer whose amount has left its source, or is on its way to settle.
TAKES_ITS_AMOUNT = {Status.CLEARED, Status.CLEARED_WITH_CONDITIONS, Status.SETTLED}
NO_FUNDS = Decimal("0.00")

SELECT_TRANSACTIONS = """
SELECT transaction_id, status, amount, from_account, to_account, status_reason_code, status_message,
       risk_score, available_balance, status_changed_at
  FROM transactions WHERE transaction_id = ANY(%b)"""


def _disagreement(message: TransactionV1, row) -> str | None:
    """The ledger, not the message, is the truth: a message that disagrees with it is not processed."""
    if row is None:
        return f"transaction {message.transaction_id} is not in the ledger"
    _, _, amount, from_account, to_account, *_ = row
    if (message.amount, message.from_account, message.to_account) != (amount, from_account, to_account):
        return (f"message says {message.amount} {message.from_account}->{message.to_account}, the ledger says "
                f"{amount} {from_account}->{to_account}")
    return None


def _score(row, customers: dict[str, Customer], rules: RulesConfig) -> int:
    """The transfer's risk score from its customers' risk levels now (a transfer's accounts exist: foreign keys)."""
    _, _, amount, from_account, to_account, *_ = row
    return risk_score(amount, customers[from_account].risk_level, customers[to_account].risk_level, rules.risk)


def _outcome(row, customers: dict[str, Customer]) -> ClearedV1:
    """The outcome the ledger records, with the parties as it holds them now."""
    (transaction_id, status, amount, from_account, to_account, reason_code, reason,
     risk, available_balance, changed_at) = row
    return ClearedV1(transaction_id=transaction_id, status=Status(status), reason_code=ReasonCode(reason_code),
                     reason=reason or "", amount=amount, from_account=from_account, to_account=to_account,
                     risk_score=risk, from_customer=customers[from_account], to_customer=customers[to_account],
                     available_balance=available_balance, cleared_at=changed_at)


def clear_batch(conn, producer, messages: list[Message], rules: RulesConfig, context: AuditContext,
                outcome_topic: str, dead_letter_topic: str, *, recording_conn) -> BatchResult:
    """Decide the batch's pending transactions in message order, reading on `conn` (one query for their
    state, one for all their accounts and customers). The first follow-up records the decisions on
    `recording_conn` (one guarded statement for all transitions); the second publishes the outcome of every
    transaction in the batch that has one, as the ledger then records it, and dead-letters what could not be
    processed.

    The follow-ups run beside the deciding of the next batch, so Python decides one batch while the
    database records the one before and the broker takes the outcomes of the one before that:
    `recording_conn` is a connection of its own then. Deciding on a state that earlier batches'
    recordings have not committed yet is safe: a transaction in two batches is pending in both readings,
    and the guarded transition of the later one finds it decided and reports a duplicate, as a
    redelivered message always does; its recorded outcome is republished, so a lost downstream message
    heals on re-drive."""
    rejects: list[tuple[Message, str]] = []
    received: list[tuple[Message, TransactionV1]] = []
    for message in messages:
        decoded = decode_transaction(message.value() or b"")
        if isinstance(decoded, InvalidMessage):
            rejects.append((message, decoded.reason))
        else:
            received.append((message, decoded))

    ids = list(dict.fromkeys(decoded.transaction_id for _, decoded in received))
    rows = {row[0]: row for row in conn.execute(SELECT_TRANSACTIONS, (ids,)).fetchall()}
    # Every message that disagrees with the ledger is dead-lettered, before or after the true one; of those
    # that agree, the first per transaction is decided (the others are copies: redeliveries).
    batch: dict[str, TransactionV1] = {}
    delivered_as: dict[str, list[Message]] = {}  # each transaction's messages that agree with the ledger
    for message, decoded in received:
        if problem := _disagreement(decoded, rows.get(decoded.transaction_id)):
            rejects.append((message, problem))
        else:
            batch.setdefault(decoded.transaction_id, decoded)
            delivered_as.setdefault(decoded.transaction_id, []).append(message)

    pending = [m for m in batch.values() if rows[m.transaction_id][1] == Status.PENDING]
    # the accounts of every transfer in the batch, decided or not: each outcome names both parties
    holders = account_holders(conn, {n for i in batch for n in rows[i][3:5]})
    accounts = {number: Account(number, holder.status, holder.balance) for number, holder in holders.items()}
    customers = customers_of(holders)
    # The transfer as the ledger has it, which the message's equals but may write differently (10.000 for 10.00),
    # scored from the ledger too: the message's score is produce's, from customers who may have been re-rated
    # since, and nothing else in the message that decides clearance goes unchecked.
    scores = {m.transaction_id: _score(rows[m.transaction_id], customers, rules) for m in pending}

    def decide(transaction_ids: list[str], accounts: dict[str, Account]) -> list[StatusChange]:
        decisions = decide_clearance(
            [ClearanceRequest(i, *rows[i][2:5], scores[i]) for i in transaction_ids], accounts, rules)
        return [StatusChange(d.transaction_id, Status.PENDING, d.status, d.reason_code, d.message,
                             risk_score=scores[d.transaction_id], available_balance=d.available_balance)
                for d in decisions]

    changes = decide([m.transaction_id for m in pending], accounts)
    recording: list[tuple] = []  # the first follow-up's (changes, applied ids, changed_at, re-read rows, vanished ids)

    def record() -> dict[str, int]:
        recorded_changes = changes

        def without_those_decided_meanwhile(current: dict[str, Status]) -> list[StatusChange]:
            # A transfer of the batch decided meanwhile (by hand, or by a batch before this one) that takes its amount
            # takes it first: it was decided first. One rejected, sent to review or deleted takes nothing, so it must
            # not keep funds reserved that a later transfer from its source may have been refused for. The transfers
            # still pending are decided again against what is left. A change by hand checks no balance, so what those
            # took may be more than the source held: then nothing is left, not a negative amount, which the ledger
            # would record as the available balance of the transfers refused for it (and refuse past -10^13).
            nonlocal recorded_changes
            left = dict(accounts)
            for m in pending:
                if current.get(m.transaction_id) in TAKES_ITS_AMOUNT:
                    _, _, amount, from_account, *_ = rows[m.transaction_id]
                    left[from_account] = replace(left[from_account],
                                                 balance=max(left[from_account].balance - amount, NO_FUNDS))
            recorded_changes = decide([m.transaction_id for m in pending
                                       if current.get(m.transaction_id) == Status.PENDING], left)
            return recorded_changes

        result = transition(recording_conn, changes, context, decide_again=without_those_decided_meanwhile)
        # the rest is re-read: a redelivery, or a transaction another batch or run decided meanwhile
        applied = set(result.applied)
        rest = [i for i in batch if i not in applied]
        reread = recording_conn.execute(SELECT_TRANSACTIONS, (rest,)).fetchall() if rest else []
        # A transaction decided outside clear (rejected by hand) has no score, which its outcome needs: it is
        # scored now and the score recorded, so that the ledger, the outcome and the Redis record agree.
        if missing_scores := {row[0]: _score(row, customers, rules) for row in reread
                              if row[1] in PUBLISHED_CLEARANCE_OUTCOMES and row[7] is None}:
            record_missing_risk_scores(recording_conn, missing_scores)
            reread = [row for row in reread if row[0] not in missing_scores]
            reread += recording_conn.execute(SELECT_TRANSACTIONS, (list(missing_scores),)).fetchall()
        # A pending transaction deleted by hand after the batch was read is in neither the decisions applied nor
        # the re-reading: its messages are dead-lettered, as they would have been had it gone before.
        vanished = set(rest) - {row[0] for row in reread}
        recording.append((recorded_changes, applied, result.changed_at, reread, vanished))
        return {"decided": len(result.applied), "duplicates": len(rest) - len(vanished)}

    def publish_outcomes() -> dict[str, int]:
        recorded_changes, applied, changed_at, reread, vanished = recording[0]
        # What the ledger now records: the decisions just applied as they were written, the rest re-read.
        recorded = {c.transaction_id: (c.transaction_id, c.new.value, *rows[c.transaction_id][2:5],
                                       c.reason_code.value, c.message, c.risk_score, c.available_balance, changed_at)
                    for c in recorded_changes if c.transaction_id in applied}
        recorded.update((row[0], row) for row in reread)
        outcomes = (_outcome(recorded[i], customers) for i in batch
                    if i not in vanished and recorded[i][1] in PUBLISHED_CLEARANCE_OUTCOMES)
        gone = [(message, _disagreement(batch[i], None)) for i in batch if i in vanished for message in delivered_as[i]]
        # both publishes flush the producer: one thread does both
        return {"published": publish(producer, outcome_topic, ((o.from_account, encode(o)) for o in outcomes)),
                "dead_lettered": dead_letter(producer, dead_letter_topic, [*rejects, *gone])}

    return BatchResult({}, (record, publish_outcomes))
