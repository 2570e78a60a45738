"""Properties of the core that must hold for any input, checked with hypothesis."""

import json
import string
from datetime import UTC, timedelta, timezone
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from ledgerflow.core.config import load_rules
from ledgerflow.core.messages import (ClearedV1, Customer, InvalidMessage, TransactionV1, decode_cleared,
                                      decode_transaction, encode)
from ledgerflow.core.money import MAX_AMOUNT
from ledgerflow.core.reasons import ReasonCode
from ledgerflow.core.rules import risk_score
from ledgerflow.core.settlement import Refused, Settled, Transfer, settle_in_order
from ledgerflow.core.states import Status

RULES = load_rules()

amounts = st.decimals(min_value=Decimal("0.01"), max_value=MAX_AMOUNT, places=2)
# Everyday balances and ones within a million of the largest (so that settlement's destination limit comes up).
balances = st.one_of(st.decimals(min_value=Decimal("0.00"), max_value=Decimal("1000000.00"), places=2),
                     st.decimals(min_value=MAX_AMOUNT - 1000000, max_value=MAX_AMOUNT, places=2))
risk_levels = st.sampled_from(["LOW", "MEDIUM", "HIGH"])
identifiers = st.text(alphabet=string.ascii_letters + string.digits + "-_:", min_size=1, max_size=50)
timestamps = st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=9))]))
customers = st.builds(Customer, customer_id=identifiers, name=st.text(max_size=100), risk_level=risk_levels)


@given(amount=amounts, from_risk=risk_levels, to_risk=risk_levels)
def test_risk_score_is_between_0_and_100(amount, from_risk, to_risk):
    assert 0 <= risk_score(amount, from_risk, to_risk, RULES.risk) <= 100


@given(smaller=amounts, larger=amounts, from_risk=risk_levels, to_risk=risk_levels)
def test_risk_score_never_decreases_when_the_amount_grows(smaller, larger, from_risk, to_risk):
    smaller, larger = sorted((smaller, larger))
    assert risk_score(smaller, from_risk, to_risk, RULES.risk) <= risk_score(larger, from_risk, to_risk, RULES.risk)


transactions = st.builds(
    TransactionV1, transaction_id=identifiers, amount=amounts, from_account=identifiers, to_account=identifiers,
    transaction_type=st.sampled_from(["TRANSFER", "PAYMENT"]), description=st.none() | st.text(max_size=200),
    created_at=timestamps, from_customer=customers, to_customer=customers, from_account_type=st.text(max_size=20),
    to_account_type=st.text(max_size=20), from_balance=balances, to_balance=balances,
    risk_score=st.integers(0, 100))

cleared_messages = st.builds(
    ClearedV1, transaction_id=identifiers, status=st.sampled_from([Status.CLEARED, Status.CLEARED_WITH_CONDITIONS,
                                                                   Status.REJECTED]),
    reason_code=st.sampled_from(list(ReasonCode)), reason=st.text(max_size=200), amount=amounts,
    from_account=identifiers, to_account=identifiers, risk_score=st.integers(0, 100), from_customer=customers,
    to_customer=customers, available_balance=st.none() | balances, cleared_at=timestamps)


@given(transactions)
def test_decode_of_encode_is_the_identity_for_transactions(message):
    assert decode_transaction(encode(message)) == message


@given(cleared_messages)
def test_decode_of_encode_is_the_identity_for_cleared_messages(message):
    assert decode_cleared(encode(message)) == message


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash_the_decoders(data):
    assert isinstance(decode_transaction(data), (TransactionV1, InvalidMessage))
    assert isinstance(decode_cleared(data), (ClearedV1, InvalidMessage))


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda children: st.lists(children) | st.dictionaries(st.text(), children), max_leaves=30)


@given(transactions, st.dictionaries(st.sampled_from(["amount", "created_at", "from_customer", "risk_score",
                                                      "transaction_id", "schema"]), json_values, min_size=1))
def test_well_formed_json_with_wrong_fields_never_crashes_the_decoder(message, overrides):
    document = {**json.loads(encode(message)), **overrides}
    assert isinstance(decode_transaction(json.dumps(document).encode()), (TransactionV1, InvalidMessage))


def expected_refusal(statuses, balances, transfer) -> ReasonCode | None:
    """The first of settlement's checks that a transfer fails, given the balances it comes up against."""
    if statuses[transfer.from_account] != "ACTIVE":
        return ReasonCode.SOURCE_ACCOUNT_NOT_ACTIVE_AT_SETTLEMENT
    if statuses[transfer.to_account] != "ACTIVE":
        return ReasonCode.DESTINATION_ACCOUNT_NOT_ACTIVE_AT_SETTLEMENT
    if balances[transfer.from_account] < transfer.amount:
        return ReasonCode.INSUFFICIENT_FUNDS_AT_SETTLEMENT
    if balances[transfer.to_account] + transfer.amount > MAX_AMOUNT:
        return ReasonCode.DESTINATION_BALANCE_LIMIT_AT_SETTLEMENT
    return None


@given(st.lists(st.tuples(st.sampled_from("ABCD"), st.sampled_from("ABCD"), amounts), max_size=60),
       st.fixed_dictionaries({name: balances for name in "ABCD"}),
       st.fixed_dictionaries({name: st.sampled_from(["ACTIVE", "ACTIVE", "FROZEN", "CLOSED"]) for name in "ABCD"}))
def test_settlement_settles_what_it_may_never_below_zero_and_conserves_money(moves, opening, statuses):
    transfers = [Transfer(f"T{i}", a, b, amount) for i, (a, b, amount) in enumerate(moves) if a != b]
    final = dict(opening)

    outcomes = settle_in_order(final, statuses, transfers)

    assert all(balance >= 0 for balance in final.values())
    assert sum(final.values()) == sum(opening.values())
    running = dict(opening)  # each transfer is decided against the balances the settled ones before it left
    for transfer, outcome in zip(transfers, outcomes, strict=True):
        assert outcome.transfer == transfer
        refusal = expected_refusal(statuses, running, transfer)
        if refusal is None:
            assert isinstance(outcome, Settled)
            running[transfer.from_account] -= transfer.amount
            running[transfer.to_account] += transfer.amount
        else:
            assert isinstance(outcome, Refused) and outcome.reason_code == refusal
    assert final == running
