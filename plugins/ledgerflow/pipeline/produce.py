"""produce: stream a window's transactions from PostgreSQL, enrich and score them, publish to Kafka."""

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from ledgerflow.core.config import RulesConfig
from ledgerflow.core.messages import Customer, TransactionV1, encode
from ledgerflow.core.rules import risk_score
from ledgerflow.store.kafka import publish
from ledgerflow.store.ledger import LOCK_IN_ORDER, AccountHolder, account_holders

# The window's transactions, read through a server-side cursor so a large window is streamed, never loaded
# whole, in creation order (that of transactions_unpublished, so nothing is sorted). Each batch is then
# enriched with both customers and accounts, as the original producer did, from one query for all the batch's
# accounts (account_holders). Joined in the window's query they cost four index lookups per row: reading
# 100,000 rows took PostgreSQL 0.96 s, against 0.43 s with the batches' queries. (produce's own rate stayed
# the same, as recording batches as published bounds it; the CPU is the rest of the pipeline's.)
SELECT_WINDOW = """
SELECT t.transaction_id, t.amount, t.from_account, t.to_account, t.transaction_type, t.description, t.created_at
  FROM transactions t
 WHERE {window}
 ORDER BY t.created_at, t.id"""

# The scheduled run: everything still pending and never published that was created before the end of
# its interval (so a skipped run loses nothing). A re-run publishes nothing already acknowledged.
NEW_IN_WINDOW = "t.status = 'pending' AND t.published_at IS NULL AND t.created_at < %(end)s"
# A re-drive (backfill) of a window: everything in it that is not terminal yet, published or not.
# Downstream steps treat a transaction that already moved on as a duplicate, so nothing applies twice.
NOT_TERMINAL_IN_WINDOW = ("t.status IN ('pending', 'cleared', 'cleared_with_conditions') "
                          "AND t.created_at >= %(start)s AND t.created_at < %(end)s")

# The first publication's time stays. The rows are found by transaction_id alone: with `published_at IS
# NULL` in the WHERE clause, the predicate of transactions_unpublished, the planner may scan that index
# and test every unpublished transaction against the batch's ids, once per batch. It did once an ANALYZE
# had seen none unpublished: a 300,000 backlog went out at 3,800 tx/s.
MARK_PUBLISHED = """
UPDATE transactions SET published_at = coalesce(published_at, now()) WHERE transaction_id = ANY(%s)"""


@dataclass(frozen=True, slots=True)
class ProduceResult:
    published: int
    batches: int
    seconds: float  # from the first row read to the last batch recorded as published
    cpu_seconds: float  # the process's CPU time (all its threads) meanwhile


def to_message(row, holders: dict[str, AccountHolder], rules: RulesConfig) -> TransactionV1:
    transaction_id, amount, from_account, to_account, transaction_type, description, created_at = row
    source, destination = holders[from_account], holders[to_account]
    return TransactionV1(
        transaction_id=transaction_id, amount=amount, from_account=from_account, to_account=to_account,
        transaction_type=transaction_type, description=description, created_at=created_at,
        from_customer=Customer(source.customer_id, source.name, source.risk_level),
        to_customer=Customer(destination.customer_id, destination.name, destination.risk_level),
        from_account_type=source.account_type, to_account_type=destination.account_type,
        from_balance=source.balance, to_balance=destination.balance,
        risk_score=risk_score(amount, source.risk_level, destination.risk_level, rules.risk))


def produce_window(reader, writer, producer, topic: str, rules: RulesConfig, end: datetime,
                   start: datetime | None = None, redrive: bool = False, batch_size: int = 10000) -> ProduceResult:
    """Publish the window's transactions in batches, keyed by source account so one account's
    transactions stay in order. `reader` streams (a transaction of its own); `writer` (autocommit)
    records each batch as published only after the broker acknowledged all of it. A batch is published
    and recorded in a background thread while the next one is read and encoded, one batch at a time and
    in order."""
    window = NOT_TERMINAL_IN_WINDOW if redrive else NEW_IN_WINDOW
    published = batches = 0
    started, started_cpu = time.monotonic(), time.process_time()

    def publish_and_record(records: list[tuple[str, bytes]], ids: list[str]) -> None:
        publish(producer, topic, records)
        with writer.transaction():
            writer.execute(LOCK_IN_ORDER, (ids,))
            writer.execute(MARK_PUBLISHED, (ids,))

    with (reader.transaction(), reader.cursor(name="ledgerflow_produce") as cursor,
          ThreadPoolExecutor(max_workers=1, thread_name_prefix="publish") as background):
        cursor.itersize = batch_size
        cursor.execute(SELECT_WINDOW.format(window=window), {"start": start, "end": end})
        in_flight = None
        while rows := cursor.fetchmany(batch_size):
            holders = account_holders(reader, {number for row in rows for number in (row[2], row[3])})
            messages = [to_message(row, holders, rules) for row in rows]
            records = [(m.from_account, encode(m)) for m in messages]
            if in_flight:
                in_flight.result()  # raises DeliveryFailed if the previous batch was not acknowledged
            in_flight = background.submit(publish_and_record, records, [m.transaction_id for m in messages])
            published += len(messages)
            batches += 1
        if in_flight:
            in_flight.result()
    return ProduceResult(published, batches, round(time.monotonic() - started, 3),
                         round(time.process_time() - started_cpu, 3))
