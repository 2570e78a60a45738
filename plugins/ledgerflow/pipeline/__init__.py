"""The pipeline's steps as plain functions over connections and clients: produce, clear, settle.

Operators in ledgerflow.operators open the connections through the providers' hooks and call these;
tests call them directly against the real services too.
"""

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What a step did with a batch in the task's thread, and the follow-up that completes it in the
    background while the next batch is taken up: clear decides in the task's thread and records and
    publishes in the follow-up; settle commits its settlement in the task's thread and writes the Redis
    records in the follow-up. A batch is done, and its offsets may be committed, once its follow-up is;
    a batch whose follow-up failed or never ran is redelivered, and every step is idempotent."""
    counts: dict[str, int]
    follow_up: Callable[[], dict[str, int]]

    def complete(self) -> dict[str, int]:
        return {**self.counts, **self.follow_up()}
