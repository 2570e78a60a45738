"""The sample generator's transfers: the hot-account variant sends the share it names from the hot accounts."""

import random
from collections import Counter

import pytest

from include.generate_transactions import transfers

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
