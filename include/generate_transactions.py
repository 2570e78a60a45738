"""Insert sample transactions into the pipeline database, for demos, load tests and benchmarks.

    include/stack/with-env python include/generate_transactions.py --count 1000 --accounts 100 --rate 200 --wait

Creates --accounts accounts (and a customer for each, with a mix of risk levels) under a run prefix,
then inserts --count pending transfers between them, with amounts spread uniformly between --min-amount
and --max-amount, at --rate per second (0: as fast as COPY goes). --hot-share sends that share of the
transfers from --hot-accounts accounts. With --wait it then follows the transactions until all are
settled or rejected and prints where they ended.
"""

import argparse
import random
import sys
import time
import uuid
from collections import Counter
from decimal import Decimal

from airflow.providers.postgres.hooks.postgres import PostgresHook

from ledgerflow.core.money import InvalidAmount, has_at_most_two_decimals, to_money

RISK_LEVELS = ["LOW"] * 7 + ["MEDIUM"] * 2 + ["HIGH"]


def money_option(text: str) -> Decimal:
    """An amount option, exact: more than two decimals is refused, as the ledger refuses it, not rounded, and so is
    a negative amount, which no balance or transfer can be."""
    try:
        amount = to_money(text)
    except InvalidAmount as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not has_at_most_two_decimals(amount):
        raise argparse.ArgumentTypeError(f"{text} has more than two decimals")
    if amount < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return amount


def create_accounts(conn, prefix: str, count: int, opening_balance: Decimal, rng: random.Random) -> list[str]:
    customers = [f"{prefix}-C{i}" for i in range(count)]
    accounts = [f"{prefix}-A{i}" for i in range(count)]
    with conn.transaction(), conn.cursor() as cursor:
        with cursor.copy("COPY customers (customer_id, name, risk_level) FROM STDIN") as copy:
            for i, customer in enumerate(customers):
                copy.write_row((customer, f"Generated customer {i}", rng.choice(RISK_LEVELS)))
        with cursor.copy("COPY accounts (account_number, customer_id, account_type, balance) FROM STDIN") as copy:
            for i, account in enumerate(accounts):
                copy.write_row((account, customers[i], rng.choice(["CHECKING", "SAVINGS"]), opening_balance))
    return accounts


def check_hot_accounts(accounts: int, hot_accounts: int, hot_share: float) -> None:
    """The hot accounts send hot_share of the transfers and no more, the others come from the other accounts: a
    share needs a hot account and, unless it is all of them, another account."""
    if hot_share and hot_accounts < 1:
        raise ValueError(f"a hot share of {hot_share} needs at least 1 hot account")
    if 0 < hot_share < 1 and hot_accounts >= accounts:
        raise ValueError(f"{hot_accounts} hot accounts leave none of the {accounts} for the other transfers")


def transfers(prefix: str, accounts: list[str], count: int, min_cents: int, max_cents: int, hot_share: float,
              hot_accounts: int, rng: random.Random):
    check_hot_accounts(len(accounts), hot_accounts, hot_share)
    hot = accounts[:hot_accounts] if hot_share else []
    others = accounts[len(hot):]
    for i in range(count):
        source = rng.choice(hot) if hot and rng.random() < hot_share else rng.choice(others)
        destination = rng.choice(accounts)
        while destination == source:
            destination = rng.choice(accounts)
        # scaleb, not / 100, which gives 12.3 for 1230 cents: money_amount keeps the scale it is given, and the
        # ledger writes balances with two
        amount = Decimal(rng.randint(min_cents, max_cents)).scaleb(-2)
        yield (f"{prefix}-T{i}", amount, source, destination, "TRANSFER", "generated")


def insert(conn, rows, count: int, rate: float, all_at_once: bool = False) -> float:
    """COPY the rows in chunks, each committed; with a rate, pace the chunks. `all_at_once`: in one transaction,
    so that all of them appear at once. Returns the time of the last insert (its commit)."""
    chunk = count if all_at_once else max(1, min(10000, int(rate / 10) if rate else 10000))
    started = time.monotonic()
    written = 0
    while written < count:
        with conn.transaction(), conn.cursor() as cursor, cursor.copy(
                "COPY transactions (transaction_id, amount, from_account, to_account, transaction_type, description) "
                "FROM STDIN") as copy:
            for _, row in zip(range(chunk), rows):
                copy.write_row(row)
                written += 1
        if rate:
            time.sleep(max(0.0, started + written / rate - time.monotonic()))
    return time.time()


def follow(conn, prefix: str, count: int, timeout: float) -> Counter:
    started = time.monotonic()
    while True:
        statuses = Counter(dict(conn.execute(
            "SELECT status, count(*) FROM transactions WHERE transaction_id LIKE %s GROUP BY status",
            (f"{prefix}-%",)).fetchall()))
        done = statuses["settled"] + statuses["rejected"] + statuses["requires_manual_review"]
        print(f"\r  {time.monotonic() - started:5.0f}s  " + "  ".join(f"{s}: {n}" for s, n in sorted(statuses.items())),
              end="", flush=True)
        if done >= count or time.monotonic() - started > timeout:
            print()
            return statuses
        time.sleep(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="transactions to insert")
    parser.add_argument("--accounts", type=int, default=100, help="accounts to create and transfer between")
    parser.add_argument("--min-amount", type=money_option, default=Decimal("1.00"))
    parser.add_argument("--max-amount", type=money_option, default=Decimal("12000.00"))
    parser.add_argument("--opening-balance", type=money_option, default=Decimal("250000.00"))
    parser.add_argument("--rate", type=float, default=0, help="transactions per second (0: as fast as possible)")
    parser.add_argument("--hot-share", type=float, default=0.0, help="share of transfers from the hot accounts")
    parser.add_argument("--hot-accounts", type=int, default=5)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--wait", action="store_true", help="follow the transactions until they are terminal")
    parser.add_argument("--timeout", type=float, default=600, help="with --wait: give up after this many seconds")
    parser.add_argument("--postgres-conn-id", default="ledgerflow_postgres")
    args = parser.parse_args()
    if args.accounts < 2 or not Decimal("0.01") <= args.min_amount <= args.max_amount:
        parser.error("need at least 2 accounts and 0.01 <= --min-amount <= --max-amount")
    try:
        check_hot_accounts(args.accounts, args.hot_accounts, args.hot_share)
    except ValueError as error:
        parser.error(f"--hot-accounts and --hot-share: {error}")

    rng = random.Random(args.seed)
    prefix = f"G{uuid.uuid4().hex[:8]}"
    conn = PostgresHook(postgres_conn_id=args.postgres_conn_id).get_conn()
    conn.autocommit = True
    accounts = create_accounts(conn, prefix, args.accounts, args.opening_balance, rng)
    rows = transfers(prefix, accounts, args.count, int(args.min_amount.scaleb(2)), int(args.max_amount.scaleb(2)),
                     args.hot_share, args.hot_accounts, rng)
    started = time.time()
    finished = insert(conn, rows, args.count, args.rate)
    print(f"inserted {args.count} transactions {prefix}-T0..{prefix}-T{args.count - 1} between {args.accounts} "
          f"accounts in {finished - started:.1f}s")
    if args.wait:
        statuses = follow(conn, prefix, args.count, args.timeout)
        if statuses["pending"] or statuses["cleared"] or statuses["cleared_with_conditions"]:
            print(f"not all transactions were terminal after {args.timeout:.0f}s", file=sys.stderr)
            return 1
        print(f"""
Look at the results:
  Airflow UI     the ledgerflow_produce, ledgerflow_clear and ledgerflow_settle runs
  PostgreSQL     make psql, then
                   SELECT status, count(*) FROM transactions WHERE transaction_id LIKE '{prefix}-%' GROUP BY status;
                   SELECT * FROM transaction_audit WHERE transaction_id = '{prefix}-T0' ORDER BY id;
                 make waiting: what is not settled or rejected yet, and what it waits for
  Redis          make redis-cli, then
                   HGETALL settlement:{prefix}-T0    (rejected:{prefix}-T0 if it was rejected)""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
