"""make redrive runs only the hours a window run can re-drive: Airflow makes no task for a logical date before the
window DAG's start date, so a run of such an hour would succeed having re-driven nothing."""

import argparse
from datetime import timedelta

import pytest

from include.redrive_waiting import hours_the_window_dag_can_run, start_of_an_hour
from ledgerflow.topology import WINDOW_DAG_START


def test_hours_before_the_window_dags_start_are_set_apart_and_the_rest_kept_in_order():
    hours = [WINDOW_DAG_START - timedelta(hours=2), WINDOW_DAG_START - timedelta(hours=1), WINDOW_DAG_START,
             WINDOW_DAG_START + timedelta(days=9000)]

    assert hours_the_window_dag_can_run(hours) == (hours[2:], hours[:2])


@pytest.mark.parametrize("text", ["2026-11-24T09:00:00", "2026-11-24T09:30:00+00:00", "2026-11-24T09:00:00+05:30"])
def test_an_hour_option_must_start_an_hour_in_utc_with_its_offset(text):
    with pytest.raises(argparse.ArgumentTypeError):
        start_of_an_hour(text)


def test_an_hour_given_in_another_offset_that_starts_a_utc_hour_is_taken():
    assert start_of_an_hour("2026-11-24T11:00:00+02:00").isoformat() == "2026-11-24T11:00:00+02:00"
