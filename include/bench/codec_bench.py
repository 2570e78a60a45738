"""Benchmark the message codec on the hot path: msgspec (typed, validating) against the standard
library's json plus hand-built objects, encode and decode of TransactionV1.

    include/stack/with-env python include/bench/codec_bench.py [--messages 100000] [--repeats 5]

Prints the median rate of each over the repeats, and the ratio.
"""

import argparse
import json
import statistics
import time
from datetime import UTC, datetime
from decimal import Decimal

from ledgerflow.core.messages import Customer, TransactionV1, decode_transaction, encode


def sample(i: int) -> TransactionV1:
    return TransactionV1(
        transaction_id=f"TXN{i:09d}", amount=Decimal(f"{(i % 100000) + 1}.{i % 100:02d}"), from_account="ACC001",
        to_account="ACC002", transaction_type="TRANSFER", description="Monthly payment",
        created_at=datetime(2026, 11, 25, 9, 30, tzinfo=UTC), from_customer=Customer("CUST001", "John Doe", "LOW"),
        to_customer=Customer("CUST002", "Jane Smith", "MEDIUM"), from_account_type="CHECKING",
        to_account_type="SAVINGS", from_balance=Decimal("50000.00"), to_balance=Decimal("25000.00"), risk_score=20)


def stdlib_encode(m: TransactionV1) -> bytes:
    return json.dumps({
        "schema": "ledgerflow.transaction.v1", "transaction_id": m.transaction_id, "amount": str(m.amount),
        "from_account": m.from_account, "to_account": m.to_account, "transaction_type": m.transaction_type,
        "description": m.description, "created_at": m.created_at.isoformat(),
        "from_customer": {"customer_id": m.from_customer.customer_id, "name": m.from_customer.name,
                          "risk_level": m.from_customer.risk_level},
        "to_customer": {"customer_id": m.to_customer.customer_id, "name": m.to_customer.name,
                        "risk_level": m.to_customer.risk_level},
        "from_account_type": m.from_account_type, "to_account_type": m.to_account_type,
        "from_balance": str(m.from_balance), "to_balance": str(m.to_balance), "risk_score": m.risk_score,
    }).encode()


def stdlib_decode(data: bytes) -> TransactionV1:
    d = json.loads(data)
    return TransactionV1(
        transaction_id=d["transaction_id"], amount=Decimal(d["amount"]), from_account=d["from_account"],
        to_account=d["to_account"], transaction_type=d["transaction_type"], description=d["description"],
        created_at=datetime.fromisoformat(d["created_at"]), from_customer=Customer(**d["from_customer"]),
        to_customer=Customer(**d["to_customer"]), from_account_type=d["from_account_type"],
        to_account_type=d["to_account_type"], from_balance=Decimal(d["from_balance"]),
        to_balance=Decimal(d["to_balance"]), risk_score=d["risk_score"])


def rate(function, items, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            function(item)
        rates.append(len(items) / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    messages = [sample(i) for i in range(args.messages)]
    encoded = [encode(m) for m in messages]
    assert all(decode_transaction(e) == m for e, m in zip(encoded[:1000], messages[:1000]))

    results = {
        "encode": (rate(encode, messages, args.repeats), rate(stdlib_encode, messages, args.repeats)),
        "decode + validate": (rate(decode_transaction, encoded, args.repeats),
                              rate(stdlib_decode, encoded, args.repeats)),
    }
    print(f"{args.messages} TransactionV1 messages, median of {args.repeats} runs, "
          f"{statistics.median(map(len, encoded)):.0f} bytes each")
    print(f"{'operation':<20}{'msgspec msg/s':>16}{'stdlib json msg/s':>20}{'ratio':>8}")
    for name, (fast, slow) in results.items():
        print(f"{name:<20}{fast:>16,.0f}{slow:>20,.0f}{fast / slow:>7.1f}x")


if __name__ == "__main__":
    main()
