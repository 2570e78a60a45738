"""The sample generator's transfers: the hot-account variant sends the share it names from the hot accounts."""

import argparse
import random
from collections import Counter
from decimal import Decimal

import pytest

from include.generate_transactions import money_option, transfers

ACCOUNTS = [f"A{i}" for i in range(1000)]


def sources(hot_share: float, count: int = 100_000) -> Counter:
    rows = transfers("P", ACCOUNTS, count, 100, 1_200_000, hot_share, 5, random.Random(7))
    return Counter(source for _, _, source, _, _, _ in rows)


def test_the_hot_accounts_send_their_share_of_the_transfers_and_no_more():
    by_source = sources(0.1)
    from_hot = sum(by_source[account] for account in ACCOUNTS[:5])
    # 10% of 100,000 varies by about 95 (one standard deviation); the other transfers drawn from all the
    # accounts, hot ones included, would add 450 more
    assert abs(from_hot - 10_000) < 300
    assert len(by_source) == 1000


def test_without_a_hot_share_every_account_sends_alike():
    by_source = sources(0.0)
    assert len(by_source) == 1000
    assert max(by_source.values()) < 3 * min(by_source.values())


def test_hot_accounts_that_leave_no_other_account_are_refused():
    with pytest.raises(ValueError, match="5 hot accounts leave none of the 5"):
        list(transfers("P", ACCOUNTS[:5], 10, 100, 200, 0.1, 5, random.Random(7)))


def test_every_amount_has_two_decimals_as_the_ledger_shows_them():
    amounts = [amount for _, amount, *_ in transfers("P", ACCOUNTS, 1000, 100, 1_200_000, 0.0, 5, random.Random(7))]
    assert all(amount.as_tuple().exponent == -2 for amount in amounts)
    assert min(amounts) >= Decimal("1.00") and max(amounts) <= Decimal("12000.00")
    assert str(amount_of_cents(1230)) == "12.30" and str(amount_of_cents(100)) == "1.00"


def amount_of_cents(cents: int) -> Decimal:
    (_, amount, *_), = transfers("P", ACCOUNTS[:2], 1, cents, cents, 0.0, 5, random.Random(7))
    return amount


@pytest.mark.parametrize("text", ["12000.009", "0.001", "nan", "1e400", "ten", "-5"])
def test_an_amount_option_that_is_not_exact_money_is_refused_not_rounded(text):
    with pytest.raises(argparse.ArgumentTypeError):
        money_option(text)


def test_an_amount_option_keeps_its_exact_value():
    assert money_option("12000.01") == Decimal("12000.01")
