"""settle: apply a batch of clearance outcomes to the ledger atomically, then project it to Redis."""

from dataclasses import dataclass

from confluent_kafka import Message

from ledgerflow.core.audit import AuditContext
from ledgerflow.core.messages import ClearedV1, InvalidMessage, decode_cleared
from ledgerflow.core.settlement import Settled
from ledgerflow.core.states import SETTLEABLE
from ledgerflow.store.kafka import dead_letter
from ledgerflow.store.ledger import settle
from ledgerflow.store.redis_projection import project


@dataclass(frozen=True, slots=True)
class SettleResult:
    settled: int
    rejected_at_settlement: int
    already_done: int
    projected: int
    dead_lettered: int


def settle_batch(conn, redis_client, producer, messages: list[Message], context: AuditContext,
                 dead_letter_topic: str) -> SettleResult:
    """Settle the batch's cleared and cleared-with-conditions transactions in message order, in one
    database transaction; then rewrite the Redis record of every transaction in the batch from the
    ledger (rejections from clearance included)."""
    rejects: list[tuple[Message, str]] = []
    outcomes: dict[str, ClearedV1] = {}
    for message in messages:
        decoded = decode_cleared(message.value() or b"")
        if isinstance(decoded, InvalidMessage):
            rejects.append((message, decoded.reason))
        else:
            outcomes.setdefault(decoded.transaction_id, decoded)

    result = settle(conn, [i for i, o in outcomes.items() if o.status in SETTLEABLE], context)
    projected = project(conn, redis_client, list(outcomes), result)
    settled = sum(isinstance(o, Settled) for o in result.outcomes)
    return SettleResult(settled=settled, rejected_at_settlement=len(result.outcomes) - settled,
                        already_done=len(result.not_settleable), projected=projected.settled + projected.rejected,
                        dead_lettered=dead_letter(producer, dead_letter_topic, rejects))
