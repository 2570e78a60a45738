"""Settlement arithmetic: in order, with before/after balances, never below zero."""

from decimal import Decimal

from ledgerflow.core.money import MAX_AMOUNT
from ledgerflow.core.reasons import ReasonCode
from ledgerflow.core.settlement import Refused, Settled, Transfer, settle_in_order

D = Decimal


def active(*accounts: str) -> dict[str, str]:
    return dict.fromkeys(accounts, "ACTIVE")


def test_transfers_apply_in_order_each_with_its_own_balances():
    balances = {"A": D("100.00"), "B": D("0.00"), "C": D("5.00")}
    outcomes = settle_in_order(balances, active("A", "B", "C"), [Transfer("T1", "A", "B", D("60.00")),
                                                                 Transfer("T2", "A", "C", D("50.00")),
                                                                 Transfer("T3", "B", "C", D("60.00")),
                                                                 Transfer("T4", "A", "B", D("40.00"))])

    assert outcomes == [
        Settled(Transfer("T1", "A", "B", D("60.00")), D("100.00"), D("40.00"), D("0.00"), D("60.00")),
        Refused(Transfer("T2", "A", "C", D("50.00")), D("40.00"), ReasonCode.INSUFFICIENT_FUNDS_AT_SETTLEMENT,
                "balance 40.00 of A no longer covers 50.00"),
        Settled(Transfer("T3", "B", "C", D("60.00")), D("60.00"), D("0.00"), D("5.00"), D("65.00")),
        Settled(Transfer("T4", "A", "B", D("40.00")), D("40.00"), D("0.00"), D("0.00"), D("40.00")),
    ]
    assert balances == {"A": D("0.00"), "B": D("40.00"), "C": D("65.00")}


def test_a_credit_past_the_largest_balance_is_refused_and_changes_nothing():
    balances = {"A": D("100.00"), "B": MAX_AMOUNT - D("10.00")}
    outcomes = settle_in_order(balances, active("A", "B"), [Transfer("T1", "A", "B", D("10.01")),
                                                            Transfer("T2", "A", "B", D("10.00"))])

    assert outcomes == [
        Refused(Transfer("T1", "A", "B", D("10.01")), D("100.00"), ReasonCode.DESTINATION_BALANCE_LIMIT_AT_SETTLEMENT,
                f"10.01 would take the balance of B past {MAX_AMOUNT}"),
        Settled(Transfer("T2", "A", "B", D("10.00")), D("100.00"), D("90.00"), MAX_AMOUNT - D("10.00"), MAX_AMOUNT),
    ]
    assert balances == {"A": D("90.00"), "B": MAX_AMOUNT}


def test_a_transfer_from_or_to_an_account_no_longer_active_is_refused_and_changes_nothing():
    balances = {"A": D("100.00"), "B": D("0.00"), "F": D("50.00"), "I": D("0.00")}
    statuses = {**active("A", "B"), "F": "FROZEN", "I": "INACTIVE"}
    outcomes = settle_in_order(balances, statuses, [Transfer("T0", "F", "B", D("80.00")),
                                                    Transfer("T1", "F", "B", D("10.00")),
                                                    Transfer("T2", "A", "I", D("10.00")),
                                                    Transfer("T3", "F", "I", D("10.00")),
                                                    Transfer("T4", "A", "B", D("10.00"))])

    assert outcomes == [  # an account's status comes before its balance
        Refused(Transfer("T0", "F", "B", D("80.00")), D("50.00"), ReasonCode.SOURCE_ACCOUNT_NOT_ACTIVE_AT_SETTLEMENT,
                "source account F is FROZEN"),
        Refused(Transfer("T1", "F", "B", D("10.00")), D("50.00"), ReasonCode.SOURCE_ACCOUNT_NOT_ACTIVE_AT_SETTLEMENT,
                "source account F is FROZEN"),
        Refused(Transfer("T2", "A", "I", D("10.00")), D("100.00"),
                ReasonCode.DESTINATION_ACCOUNT_NOT_ACTIVE_AT_SETTLEMENT, "destination account I is INACTIVE"),
        Refused(Transfer("T3", "F", "I", D("10.00")), D("50.00"), ReasonCode.SOURCE_ACCOUNT_NOT_ACTIVE_AT_SETTLEMENT,
                "source account F is FROZEN"),
        Settled(Transfer("T4", "A", "B", D("10.00")), D("100.00"), D("90.00"), D("0.00"), D("10.00")),
    ]
    assert balances == {"A": D("90.00"), "B": D("10.00"), "F": D("50.00"), "I": D("0.00")}
