"""Settlement arithmetic: apply transfers in order, each with its own before and after balances."""

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal


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
    """The source balance no longer covers the transfer."""
    transfer: Transfer
    available_balance: Decimal


def settle_in_order(balances: dict[str, Decimal], transfers: Iterable[Transfer]) -> list[Settled | Refused]:
    """Apply transfers one after another to `balances` (updated in place). A transfer the source
    balance cannot cover is refused and changes nothing, so no balance ever goes below zero."""
    outcomes: list[Settled | Refused] = []
    for transfer in transfers:
        from_before, to_before = balances[transfer.from_account], balances[transfer.to_account]
        if from_before < transfer.amount:
            outcomes.append(Refused(transfer, from_before))
            continue
        balances[transfer.from_account] = from_before - transfer.amount
        balances[transfer.to_account] = to_before + transfer.amount
        outcomes.append(Settled(transfer, from_before, balances[transfer.from_account],
                                to_before, balances[transfer.to_account]))
    return outcomes
