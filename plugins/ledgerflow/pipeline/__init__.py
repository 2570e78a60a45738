"""The pipeline's steps as plain functions over connections and clients: produce, clear, settle.

Operators in ledgerflow.operators open the connections through the providers' hooks and call these;
tests call them directly against the real services too.
"""

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AppliedBatch:
    """A batch whose changes to the ledger are committed, and what completes it outside PostgreSQL
    (publishing outcomes, writing Redis records). The follow-up only repeats what the ledger already
    says, so a batch whose follow-up never ran heals when its messages are redelivered."""
    counts: dict[str, int]
    follow_up: Callable[[], dict[str, int]]

    def complete(self) -> dict[str, int]:
        return {**self.counts, **self.follow_up()}
