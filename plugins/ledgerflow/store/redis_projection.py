"""The Redis read model: settlement:{id} and rejected:{id} hashes, always rebuilt from PostgreSQL.

Writing from the ledger rather than from the message means a redelivered message, or a crash between
the database commit and Redis, heals by writing the same record again.
"""

from collections.abc import Sequence
from dataclasses import dataclass

# Everything both hashes need, for a batch of terminal transactions, in one query. The transition
# into settled names what it settled from (cleared or cleared_with_conditions).
SELECT_TERMINAL = """
SELECT t.transaction_id, t.status, t.amount, t.from_account, t.to_account, t.risk_score, t.available_balance,
       t.status_reason_code, t.status_message, t.status_changed_at,
       fc.customer_id, fc.name, tc.customer_id, tc.name,
       debit.balance_after, credit.balance_after, debit.posted_at,
       (SELECT a.old_status FROM transaction_audit a
         WHERE a.transaction_id = t.transaction_id AND a.new_status = 'settled' LIMIT 1)
  FROM transactions t
  JOIN accounts fa ON fa.account_number = t.from_account JOIN customers fc ON fc.customer_id = fa.customer_id
  JOIN accounts ta ON ta.account_number = t.to_account JOIN customers tc ON tc.customer_id = ta.customer_id
  LEFT JOIN journal_postings debit ON debit.transaction_id = t.transaction_id AND debit.direction = 'DEBIT'
  LEFT JOIN journal_postings credit ON credit.transaction_id = t.transaction_id AND credit.direction = 'CREDIT'
 WHERE t.transaction_id = ANY(%s) AND t.status IN ('settled', 'rejected')"""


@dataclass(frozen=True, slots=True)
class ProjectionResult:
    settled: int
    rejected: int


def _text(value) -> str:
    return "" if value is None else value.isoformat() if hasattr(value, "isoformat") else str(value)


def records(row) -> tuple[str, dict[str, str]]:
    (transaction_id, status, amount, from_account, to_account, risk, available, reason_code, reason, changed_at,
     from_customer_id, from_name, to_customer_id, to_name, from_after, to_after, posted_at, cleared_as) = row
    common = {"transaction_id": transaction_id, "status": status, "amount": amount, "from_account": from_account,
              "to_account": to_account, "risk_score": risk, "from_customer_id": from_customer_id,
              "from_customer_name": from_name, "to_customer_id": to_customer_id, "to_customer_name": to_name}
    if status == "settled":
        fields = {**common, "clearance_status": cleared_as,
                  "from_balance_before": from_after + amount, "from_balance_after": from_after,
                  "to_balance_before": to_after - amount, "to_balance_after": to_after,
                  "settlement_time": posted_at}
        key = f"settlement:{transaction_id}"
    else:
        fields = {**common, "rejection_reason": reason, "reason_code": reason_code,
                  "available_balance": available, "rejection_time": changed_at}
        key = f"rejected:{transaction_id}"
    return key, {name: _text(value) for name, value in fields.items()}


def project(conn, redis_client, transaction_ids: Sequence[str]) -> ProjectionResult:
    """Write the hashes of the given transactions that are settled or rejected, in one pipeline."""
    rows = conn.execute(SELECT_TERMINAL, (list(transaction_ids),)).fetchall()
    pipeline = redis_client.pipeline(transaction=False)
    settled = 0
    for row in rows:
        key, fields = records(row)
        pipeline.hset(key, mapping=fields)
        settled += row[1] == "settled"
    pipeline.execute()
    return ProjectionResult(settled, len(rows) - settled)
