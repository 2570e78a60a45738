"""settle: apply a batch of clearance outcomes to the ledger atomically, then project it to Redis."""

from contextlib import suppress

from confluent_kafka import Message

from ledgerflow.core.audit import AuditContext
from ledgerflow.core.messages import ClearedV1, InvalidMessage, decode_cleared
from ledgerflow.core.settlement import Settled
from ledgerflow.core.states import SETTLEABLE, TERMINAL, Status
from ledgerflow.pipeline import BatchResult
from ledgerflow.store.kafka import dead_letter
from ledgerflow.store.ledger import LockedSettlement, SettlementResult, statuses
from ledgerflow.store.redis_projection import project


def settle_batch(conn, redis_client, producer, messages: list[Message], context: AuditContext,
                 dead_letter_topic: str, *, projection_conn) -> BatchResult:
    """Lock the batch's cleared and cleared-with-conditions transactions on `conn`, marking them settled (see
    LockedSettlement), and dead-letter what cannot be processed or did not come from clear; the first
    follow-up settles them in message order and commits (one database transaction from the lock on), the
    second writes the Redis record of every transaction in the batch as the ledger records it (rejections
    from clearance included), reading what this settlement did not decide on `projection_conn`, and
    dead-letters the outcomes the ledger then says clear did not publish.

    The caller may take up the next batch while these follow-ups run, on another connection than `conn`
    and `projection_conn`: its lock waits for no account, so it does not wait for this settlement unless
    both batches hold the same transaction, and the next settlement reads its balances only after this
    one has committed."""
    rejects: list[tuple[Message, str]] = []
    # Per transaction, its first outcome to settle, else its first outcome. An outcome to settle goes first: the
    # ledger, not a rejection ahead of it, says whether it settles (a rejection may be false, or may be true
    # and newer: rejected at settlement, then published again by a re-drive); the records show the ledger.
    outcomes: dict[str, tuple[Message, ClearedV1]] = {}
    rejections: list[tuple[Message, str]] = []  # every rejection in the batch, with its transaction's id
    # every outcome to settle in the batch, by transaction: all copies of one that did not come from clear are
    # dead-lettered, as every false rejection is
    to_settle: dict[str, list[Message]] = {}
    for message in messages:
        decoded = decode_cleared(message.value() or b"")
        if isinstance(decoded, InvalidMessage):
            rejects.append((message, decoded.reason))
            continue
        if decoded.status == Status.REJECTED:
            rejections.append((message, decoded.transaction_id))
        else:
            to_settle.setdefault(decoded.transaction_id, []).append(message)
        if (kept := outcomes.get(decoded.transaction_id)) is None or (
                decoded.status in SETTLEABLE and kept[1].status not in SETTLEABLE):
            outcomes.pop(decoded.transaction_id, None)  # it settles in its own place in the message order
            outcomes[decoded.transaction_id] = (message, decoded)

    locked = LockedSettlement(conn, [i for i, (_, o) in outcomes.items() if o.status in SETTLEABLE], context)
    # clear publishes only what it recorded: an outcome to settle whose transaction the ledger has not, or has
    # still pending, did not come from clear
    not_from_clear = {i: _not_from_clear(i, status) for i in locked.ordered_ids
                      if (status := locked.statuses.get(i)) in (None, Status.PENDING)}
    rejects += [(message, reason) for i, reason in not_from_clear.items() for message in to_settle[i]]
    try:
        dead_lettered = dead_letter(producer, dead_letter_topic, rejects)
    except BaseException:
        with suppress(Exception):  # the error that got here is the one to report
            locked.abandon()
        raise
    settlement: list[SettlementResult] = []  # the first follow-up's result, for the second

    def apply_transfers() -> dict[str, int]:
        settlement.append(result := locked.complete())
        settled = sum(isinstance(o, Settled) for o in result.outcomes)
        return {"settled": settled, "rejected_at_settlement": len(result.outcomes) - settled,
                "already_done": sum(status in TERMINAL for status in result.not_settleable.values())}

    def write_records() -> dict[str, int]:
        recorded_as = project(projection_conn, redis_client, list(outcomes), settlement[0])
        # Clear publishes an outcome only once the ledger records it, and rejected is terminal: a rejection of a
        # transaction the ledger does not hold rejected did not come from clear. Every outcome to settle that this
        # batch took up is settled or rejected now: one whose transaction is neither did not either.
        false = [(message, i) for message, i in rejections if recorded_as.get(i) != Status.REJECTED]
        false += [(message, i) for i, (_, outcome) in outcomes.items()
                  if outcome.status in SETTLEABLE and i not in recorded_as and i not in not_from_clear
                  for message in to_settle[i]]
        unrecorded = list({i for _, i in false if i not in recorded_as})
        held = {**recorded_as, **(statuses(projection_conn, unrecorded) if unrecorded else {})}
        return {"projected": len(recorded_as),
                "dead_lettered": dead_letter(producer, dead_letter_topic,
                                             [(message, _not_from_clear(i, held.get(i))) for message, i in false])}

    return BatchResult({"dead_lettered": dead_lettered}, (apply_transfers, write_records), abandon=locked.abandon)


def _not_from_clear(transaction_id: str, status: Status | None) -> str:
    """The dead letter's reason for an outcome that the ledger's status of its transaction says clear did not
    publish."""
    if status is None:
        return f"transaction {transaction_id} is not in the ledger"
    return f"the ledger has transaction {transaction_id} {status}"
