"""Settlement arithmetic: apply transfers in order, each with its own before and after balances."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType

from ledgerflow.core.money import MAX_AMOUNT
from ledgerflow.core.reasons import ReasonCode


@dataclass(frozen=True, slots=True)
class Transfer:
    transaction_id: str
    from_account: str
    to_account: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Settled:
    transfer: Transfer
    from_balance_before: Decimal
    from_balance_after: Decimal
    to_balance_before: Decimal
    to_balance_after: Decimal


@dataclass(frozen=True, slots=True)
class Refused:
    """A transfer that changes nothing: one of its accounts is no longer active, the source balance no longer
    covers it, or the destination balance would pass the largest amount the ledger holds (a batch that tried to
    write it would fail as a whole)."""
    transfer: Transfer
    available_balance: Decimal  # the source's balance when the transfer came up
    reason_code: ReasonCode = ReasonCode.INSUFFICIENT_FUNDS_AT_SETTLEMENT


def settle_in_order(balances: dict[str, Decimal], transfers: Iterable[Transfer],
                    not_active: Mapping[str, str] = MappingProxyType({})) -> list[Settled | Refused]:
    """Apply transfers one after another to `balances` (updated in place). A transfer from or to an account
    in `not_active` (account number -> its status) is refused and changes nothing: clearance saw both accounts
    active, but one may have been frozen or closed since. So is a transfer the source balance cannot cover,
    so no balance ever goes below zero, and one that would take the destination balance past MAX_AMOUNT."""
    outcomes: list[Settled | Refused] = []
    for transfer in transfers:
        from_before, to_before = balances[transfer.from_account], balances[transfer.to_account]
        if transfer.from_account in not_active:
            outcomes.append(Refused(transfer, from_before, ReasonCode.SOURCE_ACCOUNT_NOT_ACTIVE_AT_SETTLEMENT))
            continue
        if transfer.to_account in not_active:
            outcomes.append(Refused(transfer, from_before, ReasonCode.DESTINATION_ACCOUNT_NOT_ACTIVE_AT_SETTLEMENT))
            continue
        if from_before < transfer.amount:
            outcomes.append(Refused(transfer, from_before))
            continue
        if to_before + transfer.amount > MAX_AMOUNT:
            outcomes.append(Refused(transfer, from_before, ReasonCode.DESTINATION_BALANCE_LIMIT_AT_SETTLEMENT))
            continue
        balances[transfer.from_account] = from_before - transfer.amount
        balances[transfer.to_account] = to_before + transfer.amount
        outcomes.append(Settled(transfer, from_before, balances[transfer.from_account],
                                to_before, balances[transfer.to_account]))
    return outcomes
