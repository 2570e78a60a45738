"""settle: apply a batch of clearance outcomes to the ledger atomically, then project it to Redis."""

from confluent_kafka import Message

from ledgerflow.core.audit import AuditContext
from ledgerflow.core.messages import ClearedV1, InvalidMessage, decode_cleared
from ledgerflow.core.settlement import Settled
from ledgerflow.core.states import SETTLEABLE
from ledgerflow.pipeline import BatchResult
from ledgerflow.store.kafka import dead_letter
from ledgerflow.store.ledger import settle
from ledgerflow.store.redis_projection import project


def settle_batch(conn, redis_client, producer, messages: list[Message], context: AuditContext,
                 dead_letter_topic: str, *, projection_conn) -> BatchResult:
    """Settle the batch's cleared and cleared-with-conditions transactions in message order, in one
    database transaction, and dead-letter what cannot be processed; the follow-up writes the Redis
    record of every transaction in the batch as the ledger records it (rejections from clearance
    included), reading what this settlement did not decide on `projection_conn`: a connection of its own
    when the follow-up runs beside the next batch (which has `conn` in a transaction by then)."""
    rejects: list[tuple[Message, str]] = []
    outcomes: dict[str, ClearedV1] = {}
    for message in messages:
        decoded = decode_cleared(message.value() or b"")
        if isinstance(decoded, InvalidMessage):
            rejects.append((message, decoded.reason))
        else:
            outcomes.setdefault(decoded.transaction_id, decoded)

    result = settle(conn, [i for i, o in outcomes.items() if o.status in SETTLEABLE], context)
    settled = sum(isinstance(o, Settled) for o in result.outcomes)

    def write_records() -> dict[str, int]:
        projected = project(projection_conn, redis_client, list(outcomes), result)
        return {"projected": projected.settled + projected.rejected}

    return BatchResult({"settled": settled, "rejected_at_settlement": len(result.outcomes) - settled,
                         "already_done": len(result.not_settleable),
                         "dead_lettered": dead_letter(producer, dead_letter_topic, rejects)}, write_records)
