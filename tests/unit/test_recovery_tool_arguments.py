"""make redrive and make rewrite-records refuse arguments that would select too much or nothing, or start after
the moment given, with a usage error (exit code 2) rather than acting on them or ending in a traceback."""

from datetime import UTC, datetime, timedelta

import pytest

from include import redrive_waiting, rewrite_records


def refused(parse, argv: list[str], capsys) -> str:
    """The usage error that parsing argv ends in."""
    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("minutes", ["0", "-5", "1.5", "ten", str(redrive_waiting.MAX_OLDER_THAN_MINUTES + 1)])
def test_older_than_must_be_a_whole_number_of_minutes_of_at_least_one(minutes, capsys):
    assert "argument --older-than: " in refused(redrive_waiting.parse_arguments, ["--older-than", minutes], capsys)


def test_older_than_takes_one_minute_and_defaults_to_ten():
    assert redrive_waiting.parse_arguments(["--older-than", "1"]).older_than == 1
    assert redrive_waiting.parse_arguments([]).older_than == 10


def test_a_from_hour_after_the_to_hour_is_refused(capsys):
    error = refused(redrive_waiting.parse_arguments,
                    ["--from-hour", "2026-11-24T10:00:00+00:00", "--to-hour", "2026-11-24T09:00:00+00:00"], capsys)

    assert "--from-hour 2026-11-24T10:00:00+00:00 is after --to-hour 2026-11-24T09:00:00+00:00" in error


@pytest.mark.parametrize("from_hour, to_hour", [
    ("2026-11-24T09:00:00+00:00", "2026-11-24T09:00:00+00:00"),  # one hour
    ("2026-11-24T11:00:00+02:00", "2026-11-24T10:00:00+00:00"),  # 09:00 and 10:00 UTC
])
def test_hours_in_order_are_taken_compared_in_utc(from_hour, to_hour):
    args = redrive_waiting.parse_arguments(["--from-hour", from_hour, "--to-hour", to_hour])

    assert (args.from_hour, args.to_hour) == (datetime.fromisoformat(from_hour), datetime.fromisoformat(to_hour))


@pytest.mark.parametrize("margin", ["-1", "nan", "inf", "1e300", "86401", "fifteen minutes"])
def test_margin_must_be_seconds_from_zero_to_a_day(margin, capsys):
    error = refused(rewrite_records.parse_arguments, ["--since", "2026-11-27T04:00+00:00", "--margin", margin], capsys)

    assert "argument --margin: " in error and "give an earlier --since" in error


@pytest.mark.parametrize("margin, seconds", [("0", 0), ("86400", 86_400), (None, 900)])
def test_records_are_rewritten_from_the_margin_before_since(margin, seconds):
    argv = ["--since", "2026-11-27T04:00+00:00"] + (["--margin", margin] if margin else [])

    assert rewrite_records.parse_arguments(argv) == datetime(2026, 11, 27, 4, tzinfo=UTC) - timedelta(seconds=seconds)


def test_without_since_every_record_is_rewritten():
    assert rewrite_records.parse_arguments(["--margin", "60"]) is None


def test_since_needs_an_offset(capsys):
    assert "--since needs a UTC offset" in refused(rewrite_records.parse_arguments, ["--since", "2026-11-27T04:00"],
                                                   capsys)


def test_a_margin_reaching_before_the_year_1_is_refused(capsys):
    error = refused(rewrite_records.parse_arguments, ["--since", "0001-01-01T00:00+00:00", "--margin", "60"], capsys)

    assert "is before the year 1" in error
