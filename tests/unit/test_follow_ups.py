"""What a failed run reports of the follow-ups still running beside it."""

import logging
import threading
from concurrent.futures import Future

from ledgerflow.pipeline.follow_ups import EarlierFollowUpFailed, log_other_failures


def done(result=None, error: BaseException | None = None) -> Future:
    future: Future = Future()
    future.set_running_or_notify_cancel()
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
    return future


def cancelled() -> Future:
    """A follow-up cancelled before it started, once its thread came to it."""
    future: Future = Future()
    future.cancel()
    future.set_running_or_notify_cancel()
    return future


def test_only_errors_other_than_the_run_s_own_and_than_skipped_follow_ups_are_logged(caplog):
    failure = RuntimeError("the run's own error")
    other = ConnectionError("Redis is down")
    follow_ups = [done({}), done(error=failure), done(error=EarlierFollowUpFailed("not run")), cancelled(),
                  done(error=other)]

    with caplog.at_level(logging.ERROR):
        log_other_failures(follow_ups, failure, logging.getLogger("test"))

    assert [(r.getMessage(), r.exc_info[1]) for r in caplog.records] == [
        ("a follow-up failed too: ConnectionError('Redis is down')", other)]


def test_a_follow_up_still_running_is_waited_for_and_its_error_logged(caplog):
    running: Future = Future()
    running.set_running_or_notify_cancel()
    late = TimeoutError("Redis did not answer")
    threading.Timer(0.2, running.set_exception, (late,)).start()

    with caplog.at_level(logging.ERROR):
        log_other_failures([running], RuntimeError("the run's own error"), logging.getLogger("test"))

    assert [r.exc_info[1] for r in caplog.records] == [late]
