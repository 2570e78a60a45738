"""Settlement arithmetic: in order, with before/after balances, never below zero."""

from decimal import Decimal

from ledgerflow.core.settlement import Refused, Settled, Transfer, settle_in_order

D = Decimal


def test_transfers_apply_in_order_each_with_its_own_balances():
    balances = {"A": D("100.00"), "B": D("0.00"), "C": D("5.00")}
    outcomes = settle_in_order(balances, [Transfer("T1", "A", "B", D("60.00")),
                                          Transfer("T2", "A", "C", D("50.00")),
                                          Transfer("T3", "B", "C", D("60.00")),
                                          Transfer("T4", "A", "B", D("40.00"))])

    assert outcomes == [
        Settled(Transfer("T1", "A", "B", D("60.00")), D("100.00"), D("40.00"), D("0.00"), D("60.00")),
        Refused(Transfer("T2", "A", "C", D("50.00")), D("40.00")),
        Settled(Transfer("T3", "B", "C", D("60.00")), D("60.00"), D("0.00"), D("5.00"), D("65.00")),
        Settled(Transfer("T4", "A", "B", D("40.00")), D("40.00"), D("0.00"), D("0.00"), D("40.00")),
    ]
    assert balances == {"A": D("0.00"), "B": D("40.00"), "C": D("65.00")}
