"""The transaction state machine.

    pending ──► cleared | cleared_with_conditions | requires_manual_review | rejected
    cleared, cleared_with_conditions ──► settled | rejected (funds gone, or an account frozen or closed,
                                          by settlement time)
    requires_manual_review ──► cleared (approved) | rejected (declined)
    settled, rejected: terminal

The database restates these (transaction_statuses, transaction_status_transitions) and refuses any
other change, whoever makes it.
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
    Status.REQUIRES_MANUAL_REVIEW: frozenset({Status.CLEARED, Status.REJECTED}),
    Status.SETTLED: frozenset(),
    Status.REJECTED: frozenset(),
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


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One guarded transition: applies only if the transaction is still in `expected`.
    An illegal change cannot be constructed. Clearance also records the risk score and the source
    balance its decision saw."""
    transaction_id: str
    expected: Status
    new: Status
    reason_code: ReasonCode
    message: str
    risk_score: int | None = None
    available_balance: Decimal | None = None

    def __post_init__(self):
        require_transition(self.expected, self.new)
