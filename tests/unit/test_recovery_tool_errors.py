"""make redrive and make rewrite-records end a failure of PostgreSQL, Redis or Airflow's api-server with one line
naming what failed and what to do next, and exit 1; any other error keeps its traceback."""

from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
import redis

from include import redrive_waiting, rewrite_records
from include.airflow_control import api_failure_message

POSTGRES_REFUSED = psycopg.OperationalError(
    'connection failed: connection to server at "127.0.0.1", port 5432 failed: Connection refused\n'
    "\tIs the server running on that host and accepting TCP/IP connections?")
TOKEN = httpx.Request("POST", "http://127.0.0.1:8080/auth/token")
WINDOW_DAG = httpx.Request("GET", "http://127.0.0.1:8080/api/v2/dags/ledgerflow_produce_window")


def answered(status: int, request: httpx.Request) -> httpx.HTTPStatusError:
    return httpx.HTTPStatusError(f"{status}", request=request, response=httpx.Response(status, request=request))


def test_postgresql_refusing_names_its_address_and_the_next_step():
    expected = ('PostgreSQL: connection failed: connection to server at "127.0.0.1", port 5432 failed: '
                "Connection refused: is the stack up? (make status)")

    assert rewrite_records.failure_message(POSTGRES_REFUSED) == expected
    assert redrive_waiting.failure_message(POSTGRES_REFUSED) == expected


def test_redis_refusing_names_its_address_and_the_next_step():
    error = redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    assert rewrite_records.failure_message(error) == ("Redis: Error 111 connecting to 127.0.0.1:6379. Connection "
                                                      "refused: is the stack up? (make status)")


def test_an_api_server_that_does_not_answer_is_named_with_the_call():
    message = api_failure_message(httpx.ConnectError("[Errno 111] Connection refused", request=TOKEN))

    assert message == ("Airflow's api-server (POST http://127.0.0.1:8080/auth/token): ConnectError: [Errno 111] "
                       "Connection refused: is the stack up? (make status)")


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_login_points_at_the_admin_user_s_settings(status):
    message = api_failure_message(answered(status, TOKEN))

    assert f"refused the admin user ({status})" in message and "LEDGERFLOW_AIRFLOW_ADMIN_PASSWORD" in message


def test_a_missing_dag_names_it_and_where_to_look():
    message = api_failure_message(answered(404, WINDOW_DAG))

    assert "/api/v2/dags/ledgerflow_produce_window" in message and "airflow dags list-import-errors" in message
    assert redrive_waiting.failure_message(answered(404, WINDOW_DAG)) == message


@pytest.mark.parametrize("error", [answered(500, WINDOW_DAG), httpx.TooManyRedirects("redirects", request=TOKEN)])
def test_other_api_errors_have_no_message(error):
    assert api_failure_message(error) is None


def test_redrive_prints_the_message_and_exits_1(monkeypatch, capsys):
    def refused(args):
        raise httpx.ConnectError("[Errno 111] Connection refused", request=TOKEN)

    monkeypatch.setattr(redrive_waiting, "redrive", refused)

    assert redrive_waiting.main([]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_redrive_keeps_the_traceback_of_an_error_it_has_no_message_for(monkeypatch):
    def server_error(args):
        raise answered(500, WINDOW_DAG)

    monkeypatch.setattr(redrive_waiting, "redrive", server_error)

    with pytest.raises(httpx.HTTPStatusError):
        redrive_waiting.main([])


def test_rewrite_records_prints_the_message_and_exits_1(monkeypatch, capsys):
    def refused(since):
        raise POSTGRES_REFUSED

    monkeypatch.setattr(rewrite_records, "rewrite_since", refused)

    assert rewrite_records.main([]) == 1
    assert capsys.readouterr().err == rewrite_records.failure_message(POSTGRES_REFUSED) + "\n"


def hours(count: int) -> list[datetime]:
    return [datetime(2026, 11, 24, 9, tzinfo=UTC) + timedelta(hours=hour) for hour in range(count)]


@pytest.mark.parametrize("count, expected", [
    (0, "it was the last hour to re-drive"),
    (1, "the hour after it, 2026-11-24T09:00:00+00:00, was not tried"),
    (3, "the 3 hours after it, 2026-11-24T09:00:00+00:00 to 2026-11-24T11:00:00+00:00, were not tried"),
])
def test_a_timed_out_re_drive_says_which_hours_it_did_not_try(count, expected):
    assert redrive_waiting.not_tried(hours(count)) == expected


class _Hours:
    """PostgreSQL's answer to make redrive's query, and a connection to close: two past hours, one waiting each."""

    def __init__(self, *_, **__):
        pass

    def get_conn(self):
        return self

    def execute(self, *_):
        return self

    def fetchall(self):
        return [(hour, 1) for hour in hours(2)]

    def close(self):
        pass


class _ApiThatStopsAnswering:
    """Airflow's api-server, which starts the first run and then stops answering while make redrive waits for it."""

    def is_paused(self, dag_id):
        return False

    def run_again(self, dag_id, logical_date):
        return "manual__first"

    def finished_state(self, dag_id, run_id):
        raise httpx.ConnectError("[Errno 111] Connection refused", request=WINDOW_DAG)


def test_an_api_server_lost_while_a_run_is_waited_for_ends_its_line_and_names_the_run_and_the_hours_not_tried(
        monkeypatch, capsys):
    monkeypatch.setattr(redrive_waiting, "PostgresHook", _Hours)
    monkeypatch.setattr(redrive_waiting, "AirflowApi", _ApiThatStopsAnswering)

    assert redrive_waiting.main([]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == "2026-11-24T09:00:00+00:00  run manual__first unfinished"
    assert err.splitlines() == [
        "Airflow's api-server (GET http://127.0.0.1:8080/api/v2/dags/ledgerflow_produce_window): ConnectError: "
        "[Errno 111] Connection refused: is the stack up? (make status); run manual__first left going: the hour after "
        "it, 2026-11-24T10:00:00+00:00, was not tried (follow it in the Airflow UI; once it has ended, make redrive "
        "again)"]
