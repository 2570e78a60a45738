"""The pipeline's steps as plain functions over connections and clients: produce, clear, settle.

Operators in ledgerflow.operators open the connections through the providers' hooks and call these;
tests call them directly against the real services too.
"""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass


def _nothing_to_undo() -> None:
    pass


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What a step did with a batch in the task's thread, and the follow-ups that complete it in the
    background while the next batch is taken up, one after the other: clear decides in the task's thread,
    records in a first follow-up and publishes in a second; settle locks the batch's transactions in the
    task's thread, settles them in a first follow-up and writes the Redis records in a second. A batch is
    done, and its offsets may be committed, once its last follow-up is; a batch whose follow-ups failed or
    never ran is redelivered, and every step is idempotent. `abandon` releases what the task's thread
    took up for a batch whose follow-ups will not all run (settle's open database transaction); it does
    nothing once they have."""
    counts: dict[str, int]
    follow_ups: tuple[Callable[[], dict[str, int]], ...]
    abandon: Callable[[], None] = _nothing_to_undo

    def complete(self) -> dict[str, int]:
        """Run the follow-ups here, in order; the counts of all, added up (as the operator adds them)."""
        counts = Counter(self.counts)
        try:
            for follow_up in self.follow_ups:
                counts.update(follow_up())
        except BaseException:
            self.abandon()
            raise
        return dict(counts)
