"""Settlement arithmetic: apply transfers in order, each with its own before and after balances."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from ledgerflow.core.accounts import ACTIVE
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
    reason_code: ReasonCode
    message: str


def settle_in_order(balances: dict[str, Decimal], statuses: Mapping[str, str],
                    transfers: Iterable[Transfer]) -> list[Settled | Refused]:
    """Apply transfers one after another to `balances` (updated in place), given each account's status; both maps
    hold every account the transfers name. A transfer from or to an account that is not ACTIVE is refused and
    changes nothing: clearance saw both accounts active, but one may have been frozen or closed since. So is a
    transfer the source balance cannot cover, so no balance ever goes below zero, and one that would take the
    destination balance past MAX_AMOUNT. The checks come in that order: the first that fails names the reason."""
    outcomes: list[Settled | Refused] = []
    for transfer in transfers:
        source, destination, amount = transfer.from_account, transfer.to_account, transfer.amount
        from_before, to_before = balances[source], balances[destination]
        if statuses[source] != ACTIVE:
            outcomes.append(Refused(transfer, from_before, ReasonCode.SOURCE_ACCOUNT_NOT_ACTIVE_AT_SETTLEMENT,
                                    f"source account {source} is {statuses[source]}"))
        elif statuses[destination] != ACTIVE:
            outcomes.append(Refused(transfer, from_before, ReasonCode.DESTINATION_ACCOUNT_NOT_ACTIVE_AT_SETTLEMENT,
                                    f"destination account {destination} is {statuses[destination]}"))
        elif from_before < amount:
            outcomes.append(Refused(transfer, from_before, ReasonCode.INSUFFICIENT_FUNDS_AT_SETTLEMENT,
                                    f"balance {from_before} of {source} no longer covers {amount}"))
        elif to_before + amount > MAX_AMOUNT:
            outcomes.append(Refused(transfer, from_before, ReasonCode.DESTINATION_BALANCE_LIMIT_AT_SETTLEMENT,
                                    f"{amount} would take the balance of {destination} past {MAX_AMOUNT}"))
        else:
            balances[source] = from_before - amount
            balances[destination] = to_before + amount
            outcomes.append(Settled(transfer, from_before, balances[source], to_before, balances[destination]))
    return outcomes
