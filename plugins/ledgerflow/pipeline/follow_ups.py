"""Follow-ups: the steps that complete a batch in background threads while the next batch is taken up.

Follow-up k of every batch runs in thread k, in batch order, and only once the batch's follow-up k-1 and the
previous batch's follow-up k have succeeded: a batch is never completed past a step that failed, nor a step
run for a batch after it failed for the one before. clear and settle (KafkaBatchOperator) and produce use them.
"""

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from typing import TypeVar

T = TypeVar("T")


class FollowUpThreads(ExitStack):
    """A thread for each follow-up of a batch (the first follow-ups of all batches run in one thread, the
    second in another, ...), started as needed and shut down on exit."""

    def __init__(self):
        super().__init__()
        self.threads: list[ThreadPoolExecutor] = []
        self.last_started: list[Future] = []  # by thread, the follow-up it was given last

    def start(self, follow_ups: Sequence[Callable[[], T]]) -> list[Future]:
        started: list[Future] = []
        for i, follow_up in enumerate(follow_ups):
            earlier = started[-1:]  # the batch's previous follow-up
            if i < len(self.threads):
                earlier.append(self.last_started[i])  # the previous batch's same follow-up
            else:
                self.threads.append(self.enter_context(
                    ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"follow-up-{i}")))
            started.append(self.threads[i].submit(run_after, earlier, follow_up))
        self.last_started[:len(started)] = started
        return started


class EarlierFollowUpFailed(RuntimeError):
    """A follow-up did not run because one it comes after failed."""


def run_after(earlier: list[Future], follow_up: Callable[[], T]) -> T:
    """Run `follow_up` once the follow-ups it comes after have succeeded: a batch is never completed past
    a step that failed, nor a step run for a batch after it failed for the one before."""
    for future in earlier:
        try:
            error = future.exception()
        except CancelledError:
            raise EarlierFollowUpFailed("not run: a follow-up it comes after was cancelled") from None
        if error is not None:
            raise EarlierFollowUpFailed("not run: a follow-up it comes after failed") from error
    return follow_up()


def log_other_failures(follow_ups: Iterable[Future], failure: BaseException | None, log: logging.Logger) -> None:
    """Wait for follow-ups left running when a run failed with `failure`, and log each error of theirs that
    is neither that one (the error the run raises) nor a follow-up not run because of an earlier failure:
    nothing else would report it. A follow-up cancelled before it started needs its thread still running,
    which marks it cancelled when it comes to it: wait() never returns for one a pool's shutdown cancelled."""
    follow_ups = list(follow_ups)
    wait(follow_ups)
    for follow_up in follow_ups:
        error = None if follow_up.cancelled() else follow_up.exception()
        if error not in (None, failure) and not isinstance(error, EarlierFollowUpFailed):
            log.error("a follow-up failed too: %r", error, exc_info=error)
