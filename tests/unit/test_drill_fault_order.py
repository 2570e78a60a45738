"""The fault drill's order of faults: a fault that could not be done is tried again at later turns, without holding
up the round (a kill that kept failing once stalled the drill's round, so the other kinds came late or not at all)."""

import random
from collections import Counter

from include.bench.fault_drill import A_ROUND_OF_FAULTS, FaultOrder


def test_each_round_is_every_fault_of_a_round_once():
    order = FaultOrder(random.Random(1))
    tried = [next(order.this_turn(lambda fault: True)) for _ in range(3 * len(A_ROUND_OF_FAULTS))]
    for start in range(0, len(tried), len(A_ROUND_OF_FAULTS)):
        assert Counter(tried[start:start + len(A_ROUND_OF_FAULTS)]) == Counter(A_ROUND_OF_FAULTS)


def test_a_set_aside_fault_is_tried_first_and_takes_the_turn_when_done():
    order = FaultOrder(random.Random(2))
    first = next(order.this_turn(lambda fault: True))
    order.set_aside.append(first)
    turn = order.this_turn(lambda fault: True)
    assert next(turn) == first
    turn.close()  # done: the round's next fault waits for the next turn
    assert not order.set_aside
    assert len(order.round) == len(A_ROUND_OF_FAULTS) - 1


def test_a_fault_that_keeps_failing_does_not_hold_the_round_up():
    order = FaultOrder(random.Random(3))
    done = []
    for _ in range(2 * len(A_ROUND_OF_FAULTS)):
        for fault in order.this_turn(lambda fault: True):  # always something to kill, as idle workers always are
            if fault == "kill worker taking a task":  # ... but no worker takes a task
                order.set_aside.append(fault)
                continue
            done.append(fault)
            break
    assert set(done) == set(A_ROUND_OF_FAULTS) - {"kill worker taking a task"}
    assert len(done) == 2 * len(A_ROUND_OF_FAULTS) - 2  # every turn did a fault but the two that drew the failing one
    assert order.set_aside == ["kill worker taking a task"] * 2  # one owed by each round


def test_a_set_aside_fault_with_nothing_to_do_waits_without_taking_a_turn():
    order = FaultOrder(random.Random(4))
    order.set_aside.append("kill scheduler")
    tried = list(order.this_turn(lambda fault: fault != "kill scheduler"))
    assert len(tried) == 1 and tried[0] in A_ROUND_OF_FAULTS
    assert "kill scheduler" in order.set_aside
