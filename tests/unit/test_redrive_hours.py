"""make redrive runs only the hours a window run can re-drive: Airflow makes no task for a logical date before the
window DAG's start date, so a run of such an hour would succeed having re-driven nothing; and an hour not over is
left to its own scheduled run, which a run of its logical date would take the place of."""

import argparse
from datetime import timedelta

import pytest

from include.redrive_waiting import hours_the_window_dag_can_run, start_of_an_hour
from ledgerflow.topology import WINDOW_DAG_START


def test_hours_before_the_window_dags_start_are_set_apart_and_the_rest_kept_in_order():
    hours = [WINDOW_DAG_START - timedelta(hours=2), WINDOW_DAG_START - timedelta(hours=1), WINDOW_DAG_START,
             WINDOW_DAG_START + timedelta(days=9000)]

    now = WINDOW_DAG_START + timedelta(days=9001)

    assert hours_the_window_dag_can_run(hours, now) == (hours[2:], hours[:2], [])


def test_an_hour_not_over_is_left_to_its_own_run_which_a_re_drive_would_take_the_place_of():
    now = WINDOW_DAG_START + timedelta(days=9000, minutes=20)
    over, going_on = now - timedelta(hours=1, minutes=20), now - timedelta(minutes=20)

    assert hours_the_window_dag_can_run([over, going_on], now) == ([over], [], [going_on])
    # the moment an hour ends, its run can be made
    assert hours_the_window_dag_can_run([going_on], going_on + timedelta(hours=1)) == ([going_on], [], [])


@pytest.mark.parametrize("text", ["2026-11-24T09:00:00", "2026-11-24T09:30:00+00:00", "2026-11-24T09:00:00+05:30"])
def test_an_hour_option_must_start_an_hour_in_utc_with_its_offset(text):
    with pytest.raises(argparse.ArgumentTypeError):
        start_of_an_hour(text)


def test_an_hour_given_in_another_offset_that_starts_a_utc_hour_is_taken():
    assert start_of_an_hour("2026-11-24T11:00:00+02:00").isoformat() == "2026-11-24T11:00:00+02:00"
