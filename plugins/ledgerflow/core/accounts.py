"""Accounts as clearance and settlement see them: only an ACTIVE account sends or receives money."""

from dataclasses import dataclass
from decimal import Decimal

ACTIVE = "ACTIVE"


@dataclass(frozen=True, slots=True)
class Account:
    number: str
    status: str
    balance: Decimal
