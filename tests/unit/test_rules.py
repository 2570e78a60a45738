"""Risk scoring and clearance rules, at every threshold of include/rules.yaml and for every reason code."""

from decimal import Decimal

import pytest

from ledgerflow.core.accounts import Account
from ledgerflow.core.config import load_rules, parse_rules
from ledgerflow.core.reasons import ReasonCode
from ledgerflow.core.rules import ClearanceRequest, decide_clearance, risk_score
from ledgerflow.core.states import REASONS, Status

RULES = load_rules()
RICH = Decimal("1000000.00")


@pytest.mark.parametrize(("amount", "from_risk", "to_risk", "expected"), [
    ("4999.99", "LOW", "LOW", 0),
    ("5000.00", "LOW", "LOW", 0),
    ("5000.01", "LOW", "LOW", 15),
    ("10000.00", "LOW", "LOW", 15),
    ("10000.01", "LOW", "LOW", 30),
    ("100.00", "MEDIUM", "LOW", 20),
    ("100.00", "LOW", "MEDIUM", 20),
    ("100.00", "LOW", "HIGH", 40),
    ("100.00", "HIGH", "MEDIUM", 40),  # the riskier party counts, not both
    ("5000.01", "MEDIUM", "MEDIUM", 35),
    ("10000.01", "HIGH", "LOW", 70),
])
def test_risk_score(amount, from_risk, to_risk, expected):
    assert risk_score(Decimal(amount), from_risk, to_risk, RULES.risk) == expected


def test_risk_score_is_capped_at_max_score():
    generous = parse_rules(b"""
risk:
  amount_tiers: [{over: "10000.00", points: 90}]
  customer_risk_points: {HIGH: 40, MEDIUM: 20, LOW: 0}
  max_score: 100
clearance: {manual_review_above_score: 70, conditions_from_score: 40, manual_review_above_amount: "100000.00"}
""")
    assert risk_score(Decimal("20000.00"), "HIGH", "LOW", generous.risk) == 100


def clear(amount="100.00", score=0, balance=RICH, from_status="ACTIVE", to_status="ACTIVE",
          from_account="A", to_account="B", accounts=None):
    request = ClearanceRequest("T1", Decimal(amount), from_account, to_account, score)
    if accounts is None:
        accounts = {"A": Account("A", from_status, Decimal(balance)), "B": Account("B", to_status, Decimal("0.00"))}
    [decision] = decide_clearance([request], accounts, RULES)
    return decision


THRESHOLDS = [
    (0, "100.00", Status.CLEARED, ReasonCode.CLEARED),
    (39, "100.00", Status.CLEARED, ReasonCode.CLEARED),
    (40, "100.00", Status.CLEARED_WITH_CONDITIONS, ReasonCode.CLEARED_WITH_CONDITIONS),
    (70, "100.00", Status.CLEARED_WITH_CONDITIONS, ReasonCode.CLEARED_WITH_CONDITIONS),
    (71, "100.00", Status.REQUIRES_MANUAL_REVIEW, ReasonCode.MANUAL_REVIEW_RISK_SCORE),
    (100, "100.00", Status.REQUIRES_MANUAL_REVIEW, ReasonCode.MANUAL_REVIEW_RISK_SCORE),
    (30, "100000.00", Status.CLEARED, ReasonCode.CLEARED),
    (30, "100000.01", Status.REQUIRES_MANUAL_REVIEW, ReasonCode.MANUAL_REVIEW_AMOUNT),
    (50, "100000.01", Status.REQUIRES_MANUAL_REVIEW, ReasonCode.MANUAL_REVIEW_AMOUNT),
]


@pytest.mark.parametrize(("score", "amount", "status", "reason"), THRESHOLDS)
def test_clearance_thresholds(score, amount, status, reason):
    decision = clear(amount=amount, score=score)
    assert (decision.status, decision.reason_code) == (status, reason)


CLEARANCE_REJECTIONS = [
    (dict(amount="0.00"), ReasonCode.AMOUNT_NOT_POSITIVE, "amount 0.00 is not positive"),
    (dict(amount="-5.00"), ReasonCode.AMOUNT_NOT_POSITIVE, "amount -5.00 is not positive"),
    (dict(amount="1.005"), ReasonCode.AMOUNT_MORE_THAN_TWO_DECIMALS, "amount 1.005 has more than two decimals"),
    (dict(to_account="A"), ReasonCode.SAME_ACCOUNT, "source and destination are both A"),
    (dict(from_account="X"), ReasonCode.SOURCE_ACCOUNT_NOT_FOUND, "source account X does not exist"),
    (dict(to_account="Y"), ReasonCode.DESTINATION_ACCOUNT_NOT_FOUND, "destination account Y does not exist"),
    (dict(from_status="FROZEN"), ReasonCode.SOURCE_ACCOUNT_NOT_ACTIVE, "source account A is FROZEN"),
    (dict(to_status="CLOSED"), ReasonCode.DESTINATION_ACCOUNT_NOT_ACTIVE, "destination account B is CLOSED"),
    (dict(amount="100.01", balance="100.00"), ReasonCode.INSUFFICIENT_FUNDS,
     "available balance 100.00 of A does not cover 100.01"),
]


@pytest.mark.parametrize(("override", "reason", "message"), CLEARANCE_REJECTIONS,
                         ids=[f"{case[1]}-{i}" for i, case in enumerate(CLEARANCE_REJECTIONS)])
def test_clearance_rejects_with_a_reason(override, reason, message):
    decision = clear(**override)
    assert (decision.status, decision.reason_code, decision.message) == (Status.REJECTED, reason, message)


def test_every_clearance_decision_names_a_reason_of_its_status():
    decisions = [clear(amount=amount, score=score) for score, amount, *_ in THRESHOLDS]
    decisions += [clear(**override) for override, *_ in CLEARANCE_REJECTIONS]
    assert all(d.reason_code in REASONS[d.status] for d in decisions)


def test_the_cases_above_reach_every_reason_code_clearance_can_give():
    """The decisions these cases actually produce, not the codes they expect, must span clearance's codes."""
    decisions = [clear(amount=amount, score=score) for score, amount, *_ in THRESHOLDS]
    decisions += [clear(**override) for override, *_ in CLEARANCE_REJECTIONS]
    not_clearance = {ReasonCode.SETTLED, ReasonCode.INSUFFICIENT_FUNDS_AT_SETTLEMENT,
                     ReasonCode.DESTINATION_BALANCE_LIMIT_AT_SETTLEMENT,
                     ReasonCode.SOURCE_ACCOUNT_NOT_ACTIVE_AT_SETTLEMENT,
                     ReasonCode.DESTINATION_ACCOUNT_NOT_ACTIVE_AT_SETTLEMENT,
                     ReasonCode.REVIEW_APPROVED, ReasonCode.REVIEW_APPROVED_WITH_CONDITIONS,
                     ReasonCode.REVIEW_DECLINED}
    assert {d.reason_code for d in decisions} == set(ReasonCode) - not_clearance


def test_a_balance_that_exactly_covers_the_amount_clears():
    decision = clear(amount="100.00", balance="100.00")
    assert decision.status is Status.CLEARED
    assert decision.available_balance == Decimal("100.00")


def test_cleared_transfers_reserve_funds_for_the_rest_of_the_batch():
    accounts = {"A": Account("A", "ACTIVE", Decimal("1000.00")), "B": Account("B", "ACTIVE", Decimal("0.00"))}
    requests = [ClearanceRequest("T1", Decimal("600.00"), "A", "B", 0),
                ClearanceRequest("T2", Decimal("300.00"), "A", "B", 80),   # manual review reserves nothing
                ClearanceRequest("T3", Decimal("400.00"), "A", "B", 0),
                ClearanceRequest("T4", Decimal("0.01"), "A", "B", 0)]

    decisions = decide_clearance(requests, accounts, RULES)

    assert [d.status for d in decisions] == [Status.CLEARED, Status.REQUIRES_MANUAL_REVIEW,
                                             Status.CLEARED, Status.REJECTED]
    assert [d.available_balance for d in decisions] == [Decimal("1000.00"), Decimal("400.00"),
                                                        Decimal("400.00"), Decimal("0.00")]
    assert decisions[3].reason_code is ReasonCode.INSUFFICIENT_FUNDS


def test_transfers_cleared_with_conditions_reserve_funds_too():
    accounts = {"A": Account("A", "ACTIVE", Decimal("1000.00")), "B": Account("B", "ACTIVE", Decimal("0.00"))}
    requests = [ClearanceRequest("T1", Decimal("600.00"), "A", "B", 45),
                ClearanceRequest("T2", Decimal("400.00"), "A", "B", 45),
                ClearanceRequest("T3", Decimal("0.01"), "A", "B", 45)]

    decisions = decide_clearance(requests, accounts, RULES)

    assert [d.status for d in decisions] == [Status.CLEARED_WITH_CONDITIONS, Status.CLEARED_WITH_CONDITIONS,
                                             Status.REJECTED]
    assert [d.available_balance for d in decisions] == [Decimal("1000.00"), Decimal("400.00"), Decimal("0.00")]
    assert decisions[2].reason_code is ReasonCode.INSUFFICIENT_FUNDS
