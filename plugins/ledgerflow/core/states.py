"""The transaction state machine.

    pending ──► cleared | cleared_with_conditions | requires_manual_review | rejected
    cleared, cleared_with_conditions ──► settled | rejected (funds gone, or an account frozen or closed,
                                          by settlement time)
    requires_manual_review ──► cleared or cleared_with_conditions (approved) | rejected (declined)
    settled, rejected: terminal

Each status is entered with a reason of its own (REASONS). The database restates these
(transaction_statuses, transaction_status_transitions, transaction_status_reasons) and refuses any other
change, whoever makes it.
"""

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from ledgerflow.core.reasons import ReasonCode


class Status(StrEnum):
    PENDING = "pending"
    CLEARED = "cleared"
    CLEARED_WITH_CONDITIONS = "cleared_with_conditions"
    REQUIRES_MANUAL_REVIEW = "requires_manual_review"
    SETTLED = "settled"
    REJECTED = "rejected"


TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.CLEARED, Status.CLEARED_WITH_CONDITIONS,
                               Status.REQUIRES_MANUAL_REVIEW, Status.REJECTED}),
    Status.CLEARED: frozenset({Status.SETTLED, Status.REJECTED}),
    Status.CLEARED_WITH_CONDITIONS: frozenset({Status.SETTLED, Status.REJECTED}),
    # A review approves with conditions what the rules would have (a transfer over the review amount scoring in the
    # conditions band): it settles marked as such.
    Status.REQUIRES_MANUAL_REVIEW: frozenset({Status.CLEARED, Status.CLEARED_WITH_CONDITIONS, Status.REJECTED}),
    Status.SETTLED: frozenset(),
    Status.REJECTED: frozenset(),
}

# The reasons a transaction enters each status with. No reason belongs to two statuses, so a status change always
# names a reason other than the one it replaces (which the database requires), and a reason says its status.
REASONS: dict[Status, frozenset[ReasonCode]] = {
    Status.PENDING: frozenset(),
    Status.CLEARED: frozenset({ReasonCode.CLEARED, ReasonCode.REVIEW_APPROVED}),
    Status.CLEARED_WITH_CONDITIONS: frozenset({ReasonCode.CLEARED_WITH_CONDITIONS,
                                               ReasonCode.REVIEW_APPROVED_WITH_CONDITIONS}),
    Status.REQUIRES_MANUAL_REVIEW: frozenset({ReasonCode.MANUAL_REVIEW_RISK_SCORE, ReasonCode.MANUAL_REVIEW_AMOUNT}),
    Status.SETTLED: frozenset({ReasonCode.SETTLED}),
    Status.REJECTED: frozenset({
        # by clearance
        ReasonCode.AMOUNT_NOT_POSITIVE, ReasonCode.AMOUNT_MORE_THAN_TWO_DECIMALS, ReasonCode.SAME_ACCOUNT,
        ReasonCode.SOURCE_ACCOUNT_NOT_FOUND, ReasonCode.DESTINATION_ACCOUNT_NOT_FOUND,
        ReasonCode.SOURCE_ACCOUNT_NOT_ACTIVE, ReasonCode.DESTINATION_ACCOUNT_NOT_ACTIVE, ReasonCode.INSUFFICIENT_FUNDS,
        # by settlement
        ReasonCode.INSUFFICIENT_FUNDS_AT_SETTLEMENT, ReasonCode.DESTINATION_BALANCE_LIMIT_AT_SETTLEMENT,
        ReasonCode.SOURCE_ACCOUNT_NOT_ACTIVE_AT_SETTLEMENT, ReasonCode.DESTINATION_ACCOUNT_NOT_ACTIVE_AT_SETTLEMENT,
        # by a review, or by hand
        ReasonCode.REVIEW_DECLINED}),
}

TERMINAL = frozenset(status for status, targets in TRANSITIONS.items() if not targets)
SETTLEABLE = frozenset(status for status, targets in TRANSITIONS.items() if Status.SETTLED in targets)


class IllegalTransition(ValueError):
    def __init__(self, old: Status, new: Status):
        super().__init__(f"illegal status transition {old} -> {new}")
        self.old, self.new = old, new


def require_transition(old: Status, new: Status) -> None:
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(old, new)


class IllegalReason(ValueError):
    def __init__(self, status: Status, reason_code: ReasonCode):
        super().__init__(f"{reason_code} is not a reason for {status}")
        self.status, self.reason_code = status, reason_code


def require_reason(status: Status, reason_code: ReasonCode) -> None:
    if reason_code not in REASONS[status]:
        raise IllegalReason(status, reason_code)


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One guarded transition: applies only if the transaction is still in `expected`.
    An illegal change, or one with a reason of another status, cannot be constructed. Clearance also records
    the risk score and the source balance its decision saw."""
    transaction_id: str
    expected: Status
    new: Status
    reason_code: ReasonCode
    message: str
    risk_score: int | None = None
    available_balance: Decimal | None = None

    def __post_init__(self):
        require_transition(self.expected, self.new)
        require_reason(self.new, self.reason_code)
