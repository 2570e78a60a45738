"""Risk scoring and clearance: the original system's rules as pure functions over plain data."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from ledgerflow.core.accounts import ACTIVE, Account
from ledgerflow.core.config import ClearanceConfig, RiskConfig, RiskLevel, RulesConfig
from ledgerflow.core.money import has_at_most_two_decimals
from ledgerflow.core.reasons import ReasonCode
from ledgerflow.core.states import Status


def risk_score(amount: Decimal, from_risk: RiskLevel, to_risk: RiskLevel, rules: RiskConfig) -> int:
    """Points of the highest amount tier exceeded, plus those of the riskier customer, capped."""
    amount_points = next((tier.points for tier in rules.amount_tiers if amount > tier.over), 0)
    customer_points = max(rules.customer_risk_points[from_risk], rules.customer_risk_points[to_risk])
    return min(amount_points + customer_points, rules.max_score)


@dataclass(frozen=True, slots=True)
class ClearanceRequest:
    transaction_id: str
    amount: Decimal
    from_account: str
    to_account: str
    risk_score: int


@dataclass(frozen=True, slots=True)
class Decision:
    transaction_id: str
    status: Status
    reason_code: ReasonCode
    message: str
    available_balance: Decimal | None  # the source balance the decision saw, if the account exists


def _rejection(request: ClearanceRequest, code: ReasonCode, message: str,
               available: Decimal | None) -> Decision:
    return Decision(request.transaction_id, Status.REJECTED, code, message, available)


def _validation_failure(request: ClearanceRequest, accounts: Mapping[str, Account],
                        available: Decimal | None) -> Decision | None:
    amount = request.amount
    if amount <= 0:
        return _rejection(request, ReasonCode.AMOUNT_NOT_POSITIVE, f"amount {amount} is not positive", available)
    if not has_at_most_two_decimals(amount):
        return _rejection(request, ReasonCode.AMOUNT_MORE_THAN_TWO_DECIMALS,
                          f"amount {amount} has more than two decimals", available)
    if request.from_account == request.to_account:
        return _rejection(request, ReasonCode.SAME_ACCOUNT,
                          f"source and destination are both {request.from_account}", available)
    source, destination = accounts.get(request.from_account), accounts.get(request.to_account)
    if source is None:
        return _rejection(request, ReasonCode.SOURCE_ACCOUNT_NOT_FOUND,
                          f"source account {request.from_account} does not exist", available)
    if destination is None:
        return _rejection(request, ReasonCode.DESTINATION_ACCOUNT_NOT_FOUND,
                          f"destination account {request.to_account} does not exist", available)
    if source.status != ACTIVE:
        return _rejection(request, ReasonCode.SOURCE_ACCOUNT_NOT_ACTIVE,
                          f"source account {source.number} is {source.status}", available)
    if destination.status != ACTIVE:
        return _rejection(request, ReasonCode.DESTINATION_ACCOUNT_NOT_ACTIVE,
                          f"destination account {destination.number} is {destination.status}", available)
    if available < amount:
        return _rejection(request, ReasonCode.INSUFFICIENT_FUNDS,
                          f"available balance {available} of {source.number} does not cover {amount}", available)
    return None


def _risk_decision(request: ClearanceRequest, rules: ClearanceConfig, available: Decimal) -> Decision:
    score, amount = request.risk_score, request.amount
    if score > rules.manual_review_above_score:
        return Decision(request.transaction_id, Status.REQUIRES_MANUAL_REVIEW, ReasonCode.MANUAL_REVIEW_RISK_SCORE,
                        f"risk score {score} is above {rules.manual_review_above_score}", available)
    if amount > rules.manual_review_above_amount:
        return Decision(request.transaction_id, Status.REQUIRES_MANUAL_REVIEW, ReasonCode.MANUAL_REVIEW_AMOUNT,
                        f"amount {amount} is above {rules.manual_review_above_amount}", available)
    if score >= rules.conditions_from_score:
        return Decision(request.transaction_id, Status.CLEARED_WITH_CONDITIONS, ReasonCode.CLEARED_WITH_CONDITIONS,
                        f"risk score {score} is between {rules.conditions_from_score} and "
                        f"{rules.manual_review_above_score}", available)
    return Decision(request.transaction_id, Status.CLEARED, ReasonCode.CLEARED,
                    f"risk score {score} is below {rules.conditions_from_score}", available)


def decide_clearance(requests: Iterable[ClearanceRequest], accounts: Mapping[str, Account],
                     rules: RulesConfig) -> list[Decision]:
    """Decide a batch in order. Each cleared transfer reserves its amount, so later transfers from
    the same account are checked against what is left, not against the balance the batch started with."""
    available = {number: account.balance for number, account in accounts.items()}
    decisions = []
    for request in requests:
        seen = available.get(request.from_account)
        decision = _validation_failure(request, accounts, seen) or _risk_decision(request, rules.clearance, seen)
        if decision.status in (Status.CLEARED, Status.CLEARED_WITH_CONDITIONS):
            available[request.from_account] = seen - request.amount
        decisions.append(decision)
    return decisions
