"""The state machine and exact money."""

from decimal import Decimal

import pytest

from ledgerflow.core.money import InvalidAmount, has_at_most_two_decimals, to_money
from ledgerflow.core.reasons import ReasonCode
from ledgerflow.core.states import (REASONS, SETTLEABLE, TERMINAL, TRANSITIONS, IllegalReason, IllegalTransition,
                                    Status, StatusChange, require_transition)

S = Status


def test_transitions_are_the_specified_ones():
    legal = {(old, new) for old, targets in TRANSITIONS.items() for new in targets}
    assert legal == {
        (S.PENDING, S.CLEARED), (S.PENDING, S.CLEARED_WITH_CONDITIONS), (S.PENDING, S.REQUIRES_MANUAL_REVIEW),
        (S.PENDING, S.REJECTED), (S.CLEARED, S.SETTLED), (S.CLEARED, S.REJECTED),
        (S.CLEARED_WITH_CONDITIONS, S.SETTLED), (S.CLEARED_WITH_CONDITIONS, S.REJECTED),
        (S.REQUIRES_MANUAL_REVIEW, S.CLEARED), (S.REQUIRES_MANUAL_REVIEW, S.CLEARED_WITH_CONDITIONS),
        (S.REQUIRES_MANUAL_REVIEW, S.REJECTED)}
    assert TERMINAL == {S.SETTLED, S.REJECTED}
    assert SETTLEABLE == {S.CLEARED, S.CLEARED_WITH_CONDITIONS}


@pytest.mark.parametrize(("old", "new"), [(S.PENDING, S.SETTLED), (S.SETTLED, S.REJECTED), (S.REJECTED, S.PENDING),
                                          (S.REQUIRES_MANUAL_REVIEW, S.SETTLED), (S.CLEARED, S.CLEARED),
                                          (S.CLEARED, S.PENDING)])
def test_illegal_transitions_are_refused(old, new):
    with pytest.raises(IllegalTransition, match=f"illegal status transition {old} -> {new}"):
        require_transition(old, new)
    with pytest.raises(IllegalTransition):
        StatusChange("T1", old, new, ReasonCode.SETTLED, "no")


def test_every_reason_code_is_a_reason_for_exactly_one_status_and_pending_has_none():
    # so a status change never names the reason it replaces, which the database refuses
    assert REASONS.keys() == set(Status)
    assert sorted(reason for reasons in REASONS.values() for reason in reasons) == sorted(ReasonCode)
    assert REASONS[S.PENDING] == frozenset()
    assert REASONS[S.SETTLED] == {ReasonCode.SETTLED}


@pytest.mark.parametrize(("new", "reason"), [(S.CLEARED, ReasonCode.SETTLED),
                                             (S.REJECTED, ReasonCode.CLEARED),
                                             (S.CLEARED_WITH_CONDITIONS, ReasonCode.REVIEW_APPROVED)])
def test_a_change_with_a_reason_of_another_status_cannot_even_be_requested(new, reason):
    with pytest.raises(IllegalReason, match=f"{reason} is not a reason for {new}"):
        StatusChange("T1", S.PENDING, new, reason, "no")


def test_every_status_is_reachable_from_pending_and_every_path_ends_terminal():
    reachable, frontier = {S.PENDING}, [S.PENDING]
    while frontier:
        for new in TRANSITIONS[frontier.pop()] - reachable:
            reachable.add(new)
            frontier.append(new)
    assert reachable == set(Status)
    assert TERMINAL == {S.SETTLED, S.REJECTED}


def test_no_status_can_come_back_so_every_path_ends_terminal():
    """No cycles: a transaction never returns to a status it left, so each path reaches a terminal status."""
    def later(status, seen=frozenset()):
        for new in TRANSITIONS[status]:
            assert new not in seen | {status}, f"{new} can follow itself"
            later(new, seen | {status})
    later(S.PENDING)


@pytest.mark.parametrize(("value", "expected"), [("1500.00", Decimal("1500.00")), (7, Decimal(7)),
                                                 (Decimal("0.01"), Decimal("0.01")), ("-2.50", Decimal("-2.50"))])
def test_to_money_is_exact(value, expected):
    amount = to_money(value)
    assert amount == expected and str(amount) == str(expected)


@pytest.mark.parametrize("value", [0.1, True, "NaN", "Infinity", "abc", "", "1e14", None, "1E+1000000",
                                   "-1E+1000000", "9999999999999.990000000000000000001"])
def test_to_money_refuses_what_is_not_an_exact_finite_amount(value):
    with pytest.raises(InvalidAmount):
        to_money(value)


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("1.5", True), ("1.50", True), ("1.005", False),
                                                 ("1.500", False), ("1E+2", True)])
def test_has_at_most_two_decimals(value, expected):
    assert has_at_most_two_decimals(Decimal(value)) is expected
