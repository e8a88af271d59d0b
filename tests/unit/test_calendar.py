"""Business hours: SLA deadlines that skip nights, weekends and holidays, DST-safe.

The default calendar is the one in pipelines/default.yaml: Europe/Berlin, Monday to Friday,
08:00-17:00 (nine hours a day). Berlin is UTC+1 in winter (CET) and UTC+2 in summer (CEST);
in 2026 the clocks go forward on Sunday 29 March (02:00 CET -> 03:00 CEST) and back on
Sunday 25 October (03:00 CEST -> 02:00 CET). Every expected value below is worked out by
hand in the comment next to it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from models.calendar import Calendar, add_months
from models.errors import InputError
from models.pipeline import parse_pipeline

BERLIN = ZoneInfo("Europe/Berlin")
OFFICE = Calendar()  # Europe/Berlin, mon-fri, 08:00-17:00
# Thursday 26 November 2026 is a holiday.
WITH_HOLIDAY = Calendar(holidays=(date(2026, 11, 26),))
# Christmas Eve and Christmas Day 2026 fall on Thursday and Friday.
CHRISTMAS = Calendar(holidays=(date(2026, 12, 24), date(2026, 12, 25)))
# A night shift, every day, 01:00-04:00 local time: the window that the clock change cuts
# (spring: 02:00-03:00 does not exist) or stretches (autumn: 02:00-03:00 happens twice).
NIGHT_SHIFT = Calendar(
    workdays=("mon", "tue", "wed", "thu", "fri", "sat", "sun"), start=time(1), end=time(4)
)


def berlin(y: int, m: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, m, d, h, mi, tzinfo=BERLIN)


def utc(y: int, m: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, m, d, h, mi, tzinfo=UTC)


ADD_CASES = [
    pytest.param(
        OFFICE,
        berlin(2026, 11, 25, 10),
        3,
        # Wed 10:00 CET + 3 h = Wed 13:00 CET = 12:00 UTC.
        utc(2026, 11, 25, 12),
        id="within-a-day",
    ),
    pytest.param(
        OFFICE,
        berlin(2026, 11, 25, 8),
        9,
        # Wed 08:00 + the whole 9-hour day = Wed 17:00 CET (closing, not Thu 08:00) = 16:00 UTC.
        utc(2026, 11, 25, 16),
        id="a-full-day-ends-at-closing",
    ),
    pytest.param(
        OFFICE,
        berlin(2026, 11, 25, 15),
        4,
        # Wed 15:00-17:00 = 2 h; Thu 08:00 + 2 h = Thu 10:00 CET = 09:00 UTC.
        utc(2026, 11, 26, 9),
        id="across-a-night",
    ),
    pytest.param(
        OFFICE,
        berlin(2026, 11, 25, 16, 30),
        1.5,
        # Wed 16:30-17:00 = 0.5 h; Thu 08:00 + 1 h = Thu 09:00 CET = 08:00 UTC.
        utc(2026, 11, 26, 8),
        id="fractional-hours-across-a-night",
    ),
    pytest.param(
        OFFICE,
        berlin(2026, 11, 25, 10),
        16,
        # The joint review's SLA: Wed 10:00-17:00 = 7 h; Thu 08:00 + 9 h = Thu 17:00 CET = 16:00 UTC.
        utc(2026, 11, 26, 16),
        id="sixteen-hours-from-wednesday-morning",
    ),
    pytest.param(
        OFFICE,
        berlin(2026, 11, 27, 16),
        3,
        # Fri 16:00-17:00 = 1 h; Sat, Sun skipped; Mon 30 Nov 08:00 + 2 h = 10:00 CET = 09:00 UTC.
        utc(2026, 11, 30, 9),
        id="across-a-weekend",
    ),
    pytest.param(
        OFFICE,
        berlin(2026, 11, 25, 10),
        40,
        # Wed 7 h (7), Thu 9 (16), Fri 9 (25), weekend 0, Mon 9 (34), Tue 08:00 + 6 h = 14:00 CET
        # = Tue 1 Dec 13:00 UTC.
        utc(2026, 12, 1, 13),
        id="forty-hours-span-a-weekend",
    ),
    pytest.param(
        WITH_HOLIDAY,
        berlin(2026, 11, 25, 15),
        4,
        # Wed 15:00-17:00 = 2 h; Thu 26 is a holiday; Fri 08:00 + 2 h = 10:00 CET = 09:00 UTC.
        utc(2026, 11, 27, 9),
        id="across-a-holiday",
    ),
    pytest.param(
        WITH_HOLIDAY,
        berlin(2026, 11, 26, 10),
        1,
        # Starts on the holiday: nothing counts until Fri 08:00; + 1 h = 09:00 CET = 08:00 UTC.
        utc(2026, 11, 27, 8),
        id="starting-on-a-holiday",
    ),
    pytest.param(
        CHRISTMAS,
        berlin(2026, 12, 23, 16),
        2,
        # Wed 23 Dec 16:00-17:00 = 1 h; Thu 24 and Fri 25 holidays; Sat, Sun; Mon 28 Dec
        # 08:00 + 1 h = 09:00 CET = 08:00 UTC.
        utc(2026, 12, 28, 8),
        id="holidays-next-to-a-weekend",
    ),
    pytest.param(
        OFFICE,
        berlin(2026, 11, 25, 6),
        1,
        # Before opening: the clock starts at 08:00; + 1 h = 09:00 CET = 08:00 UTC the same day.
        utc(2026, 11, 25, 8),
        id="starting-before-opening",
    ),
    pytest.param(
        OFFICE,
        berlin(2026, 11, 25, 17),
        1,
        # Exactly at closing: nothing left today; Thu 08:00 + 1 h = 09:00 CET = 08:00 UTC.
        utc(2026, 11, 26, 8),
        id="starting-at-closing",
    ),
    pytest.param(
        OFFICE,
        berlin(2026, 11, 25, 18),
        1,
        # After closing: Thu 08:00 + 1 h = 09:00 CET = 08:00 UTC.
        utc(2026, 11, 26, 8),
        id="starting-after-closing",
    ),
    pytest.param(
        OFFICE,
        berlin(2026, 11, 28, 12),
        1,
        # Saturday noon: Sat and Sun do not count; Mon 30 Nov 08:00 + 1 h = 09:00 CET = 08:00 UTC.
        utc(2026, 11, 30, 8),
        id="starting-on-a-saturday",
    ),
    pytest.param(
        OFFICE,
        berlin(2026, 11, 27, 17, 30),
        2,
        # Friday after closing: Mon 08:00 + 2 h = 10:00 CET = 09:00 UTC.
        utc(2026, 11, 30, 9),
        id="starting-on-friday-evening",
    ),
    pytest.param(
        OFFICE,
        utc(2026, 11, 25, 9),
        3,
        # The start may be given in any zone: 09:00 UTC is 10:00 CET; + 3 h = 13:00 CET = 12:00 UTC.
        utc(2026, 11, 25, 12),
        id="start-given-in-utc",
    ),
    pytest.param(
        OFFICE,
        berlin(2026, 3, 27, 16),
        2,
        # Spring forward over the weekend: Fri 27 Mar 16:00-17:00 CET = 1 h; Mon 30 Mar opens at
        # 08:00 CEST = 06:00 UTC; + 1 h = 07:00 UTC (not 08:00: Monday is UTC+2).
        utc(2026, 3, 30, 7),
        id="across-the-spring-dst-change",
    ),
    pytest.param(
        OFFICE,
        berlin(2026, 3, 26, 9),
        20,
        # Thu 26 Mar 09:00-17:00 CET = 8 h (8); Fri 9 h (17); Mon 30 Mar 08:00 CEST + 3 h
        # = 11:00 CEST = 09:00 UTC.
        utc(2026, 3, 30, 9),
        id="several-days-across-the-spring-dst-change",
    ),
    pytest.param(
        OFFICE,
        berlin(2026, 10, 23, 16),
        2,
        # Fall back over the weekend: Fri 23 Oct 16:00-17:00 CEST = 1 h; Mon 26 Oct opens at
        # 08:00 CET = 07:00 UTC; + 1 h = 08:00 UTC (not 07:00: Monday is UTC+1).
        utc(2026, 10, 26, 8),
        id="across-the-autumn-dst-change",
    ),
    pytest.param(
        NIGHT_SHIFT,
        berlin(2026, 3, 29, 1),
        2,
        # Sun 29 Mar 01:00 CET = 00:00 UTC; the shift ends at 04:00 CEST = 02:00 UTC: the
        # 01:00-04:00 window lasts only 2 real hours that night. 00:00 UTC + 2 h = 02:00 UTC.
        utc(2026, 3, 29, 2),
        id="night-shift-shortened-by-spring-dst",
    ),
    pytest.param(
        NIGHT_SHIFT,
        berlin(2026, 3, 29, 1),
        3,
        # 2 h on Sunday night (above); Mon 30 Mar opens 01:00 CEST = Sun 23:00 UTC; + 1 h
        # = Mon 30 Mar 00:00 UTC.
        utc(2026, 3, 30, 0),
        id="night-shift-spring-dst-into-the-next-night",
    ),
    pytest.param(
        NIGHT_SHIFT,
        berlin(2026, 10, 25, 1),
        4,
        # Sun 25 Oct 01:00 CEST = Sat 23:00 UTC; the shift ends at 04:00 CET = 03:00 UTC: the
        # window lasts 4 real hours that night. 23:00 UTC + 4 h = 03:00 UTC.
        utc(2026, 10, 25, 3),
        id="night-shift-lengthened-by-autumn-dst",
    ),
]


@pytest.mark.parametrize(("calendar", "start", "hours", "expected"), ADD_CASES)
def test_add_business_hours_matches_the_hand_computation(
    calendar: Calendar, start: datetime, hours: float, expected: datetime
) -> None:
    due = calendar.add_business_hours(start, hours)
    assert due == expected
    assert due.utcoffset() == timedelta(0)  # UTC out
    # And the other way round: the working hours from the start to the deadline are `hours`.
    assert calendar.business_hours_between(start, due) == pytest.approx(hours)


@pytest.mark.parametrize(
    ("calendar", "start", "end", "hours"),
    [
        # Wed 10:00-13:00 = 3 h.
        pytest.param(
            OFFICE, berlin(2026, 11, 25, 10), berlin(2026, 11, 25, 13), 3.0, id="within-a-day"
        ),
        # Wed 15:00-17:00 = 2 h, Thu 08:00-10:00 = 2 h: 4 h.
        pytest.param(
            OFFICE, berlin(2026, 11, 25, 15), berlin(2026, 11, 26, 10), 4.0, id="across-a-night"
        ),
        # Wed 18:00 to Thu 07:00: a night, nothing.
        pytest.param(
            OFFICE, berlin(2026, 11, 25, 18), berlin(2026, 11, 26, 7), 0.0, id="only-a-night"
        ),
        # Fri 16:00-17:00 = 1 h, weekend 0, Mon 08:00-10:00 = 2 h: 3 h.
        pytest.param(
            OFFICE, berlin(2026, 11, 27, 16), berlin(2026, 11, 30, 10), 3.0, id="across-a-weekend"
        ),
        # Sat 10:00 to Sun 16:00: nothing.
        pytest.param(
            OFFICE, berlin(2026, 11, 28, 10), berlin(2026, 11, 29, 16), 0.0, id="only-a-weekend"
        ),
        # Wed 06:00 to Wed 18:00: clipped to 08:00-17:00 = 9 h.
        pytest.param(
            OFFICE,
            berlin(2026, 11, 25, 6),
            berlin(2026, 11, 25, 18),
            9.0,
            id="before-opening-to-after-closing",
        ),
        # Fri 27 Nov 08:00 to Fri 4 Dec 08:00: Fri, Mon, Tue, Wed, Thu = 5 x 9 h = 45 h.
        pytest.param(
            OFFICE, berlin(2026, 11, 27, 8), berlin(2026, 12, 4, 8), 45.0, id="a-working-week"
        ),
        # Wed 15:00-17:00 = 2 h, Thu 26 holiday, Fri 08:00-10:00 = 2 h: 4 h (13 h without it).
        pytest.param(
            WITH_HOLIDAY,
            berlin(2026, 11, 25, 15),
            berlin(2026, 11, 27, 10),
            4.0,
            id="across-a-holiday",
        ),
        pytest.param(
            OFFICE,
            berlin(2026, 11, 25, 15),
            berlin(2026, 11, 27, 10),
            13.0,
            id="the-same-span-without-the-holiday",
        ),
        # Fri 27 Mar 16:00-17:00 CET = 1 h, Mon 30 Mar 08:00-09:00 CEST = 1 h: 2 h.
        pytest.param(
            OFFICE,
            berlin(2026, 3, 27, 16),
            berlin(2026, 3, 30, 9),
            2.0,
            id="across-the-spring-dst-change",
        ),
        # Mon 23 Mar 08:00 CET to Mon 30 Mar 08:00 CEST: Mon-Fri = 5 x 9 h = 45 h (the lost hour
        # is on Sunday night and was never a working hour).
        pytest.param(
            OFFICE,
            berlin(2026, 3, 23, 8),
            berlin(2026, 3, 30, 8),
            45.0,
            id="a-week-across-the-spring-dst-change",
        ),
        # Fri 23 Oct 16:00-17:00 CEST = 1 h, Mon 26 Oct 08:00-09:00 CET = 1 h: 2 h.
        pytest.param(
            OFFICE,
            berlin(2026, 10, 23, 16),
            berlin(2026, 10, 26, 9),
            2.0,
            id="across-the-autumn-dst-change",
        ),
        # Sun 29 Mar 00:00 to Mon 30 Mar 00:00: the 01:00 CET-04:00 CEST shift = 00:00-02:00 UTC = 2 h.
        pytest.param(
            NIGHT_SHIFT,
            berlin(2026, 3, 29),
            berlin(2026, 3, 30),
            2.0,
            id="night-shift-on-the-spring-dst-night",
        ),
        # Sun 25 Oct 00:00 to Mon 26 Oct 00:00: the 01:00 CEST-04:00 CET shift = 23:00-03:00 UTC = 4 h.
        pytest.param(
            NIGHT_SHIFT,
            berlin(2026, 10, 25),
            berlin(2026, 10, 26),
            4.0,
            id="night-shift-on-the-autumn-dst-night",
        ),
        # Start and end in different zones: 09:00 UTC = 10:00 CET to 12:00 CET = 2 h.
        pytest.param(
            OFFICE, utc(2026, 11, 25, 9), berlin(2026, 11, 25, 12), 2.0, id="mixed-time-zones"
        ),
        pytest.param(
            OFFICE, berlin(2026, 11, 25, 12), berlin(2026, 11, 25, 12), 0.0, id="no-time-at-all"
        ),
        pytest.param(
            OFFICE, berlin(2026, 11, 26, 12), berlin(2026, 11, 25, 12), 0.0, id="end-before-start"
        ),
    ],
)
def test_business_hours_between_matches_the_hand_computation(
    calendar: Calendar, start: datetime, end: datetime, hours: float
) -> None:
    assert calendar.business_hours_between(start, end) == pytest.approx(hours)


def test_a_calendar_without_working_hours_for_ten_years_gives_up_with_a_message() -> None:
    # Only Mondays are working days, and every Monday for the next eleven years is a holiday.
    first_monday = date(2026, 11, 30)
    mondays = tuple(first_monday + timedelta(weeks=n) for n in range(11 * 53))
    calendar = Calendar(workdays=("mon",), holidays=mondays)
    with pytest.raises(ValueError, match="no working hours within ten years"):
        calendar.add_business_hours(berlin(2026, 11, 25, 10), 1)


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        # 23:30 UTC on 24 Nov is already 00:30 on 25 Nov in Berlin (UTC+1).
        (utc(2026, 11, 24, 23, 30), date(2026, 11, 25)),
        (utc(2026, 11, 24, 22, 59), date(2026, 11, 24)),
        # In summer (UTC+2) the date turns at 22:00 UTC.
        (utc(2026, 7, 1, 22, 0), date(2026, 7, 2)),
    ],
    ids=str,
)
def test_today_is_the_date_at_the_organisations_location(instant: datetime, expected: date) -> None:
    assert OFFICE.today(instant) == expected


# ------------------------------------------------------------------ shift_workdays


@pytest.mark.parametrize(
    ("calendar", "day", "count", "expected"),
    [
        # Friday 12 March 2027 back ten working days: two whole weeks, Friday 26 February.
        (OFFICE, date(2027, 3, 12), -10, date(2027, 2, 26)),
        (OFFICE, date(2026, 11, 27), 1, date(2026, 11, 30)),  # Friday + 1: Monday
        (OFFICE, date(2026, 11, 30), -1, date(2026, 11, 27)),  # Monday - 1: Friday
        (OFFICE, date(2026, 11, 28), -1, date(2026, 11, 27)),  # from a Saturday
        (OFFICE, date(2026, 11, 28), 0, date(2026, 11, 28)),  # 0: the day itself, even off
        (WITH_HOLIDAY, date(2026, 11, 27), -1, date(2026, 11, 25)),  # skips Thursday's holiday
        (WITH_HOLIDAY, date(2026, 11, 25), 1, date(2026, 11, 27)),
        # Christmas Eve and Day (Thu, Fri) and the weekend: Wed 23 Dec + 1 is Mon 28 Dec.
        (CHRISTMAS, date(2026, 12, 23), 1, date(2026, 12, 28)),
        (CHRISTMAS, date(2026, 12, 28), -1, date(2026, 12, 23)),
    ],
    ids=str,
)
def test_shift_workdays_counts_working_days_only(
    calendar: Calendar, day: date, count: int, expected: date
) -> None:
    assert calendar.shift_workdays(day, count) == expected


def test_shift_workdays_gives_up_on_a_calendar_without_working_days_for_ten_years() -> None:
    mondays = tuple(date(2026, 11, 30) + timedelta(weeks=n) for n in range(11 * 53))
    calendar = Calendar(workdays=("mon",), holidays=mondays)
    with pytest.raises(ValueError, match="no working day within ten years"):
        calendar.shift_workdays(date(2026, 11, 25), 1)


# ------------------------------------------------------------------ add_months


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (date(2026, 1, 31), 1, date(2026, 2, 28)),  # 2026 is not a leap year: clamped to the 28th
        (date(2028, 1, 31), 1, date(2028, 2, 29)),  # 2028 is a leap year
        (date(2028, 2, 29), 12, date(2029, 2, 28)),  # a leap day a year later: clamped
        (date(2028, 2, 29), 48, date(2032, 2, 29)),  # ... four years later: a leap day again
        (date(2026, 3, 31), 1, date(2026, 4, 30)),  # April has 30 days
        (date(2026, 8, 31), 1, date(2026, 9, 30)),
        (date(2026, 12, 31), 2, date(2027, 2, 28)),  # across the year end
        (date(2026, 11, 25), 36, date(2029, 11, 25)),  # a 36-month warranty
        (date(2026, 11, 25), 1, date(2026, 12, 25)),
        (date(2026, 12, 15), 1, date(2027, 1, 15)),
        (date(2026, 11, 25), 0, date(2026, 11, 25)),
        (date(2026, 3, 31), -1, date(2026, 2, 28)),  # backwards, clamped too
        (date(2026, 1, 15), -1, date(2025, 12, 15)),  # backwards across the year start
        (date(2026, 1, 31), 120, date(2036, 1, 31)),  # a ten-year term
    ],
    ids=str,
)
def test_add_months_keeps_the_day_or_clamps_to_the_months_last_day(
    day: date, months: int, expected: date
) -> None:
    assert add_months(day, months) == expected


# ------------------------------------------------------------------ bad calendars


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"timezone": "Mars/Olympus_Mons"}, "unknown time zone 'Mars/Olympus_Mons'"),
        ({"timezone": "Europe/Berlinn"}, "unknown time zone 'Europe/Berlinn'"),
        ({"timezone": ""}, "unknown time zone ''"),
        ({"timezone": "../../etc/passwd"}, "unknown time zone"),
        ({"start": time(17), "end": time(8)}, r"end \(08:00:00\) must be after start \(17:00:00\)"),
        ({"start": time(8), "end": time(8)}, r"end \(08:00:00\) must be after start \(08:00:00\)"),
        ({"workdays": ()}, "at least one working day is needed"),
        ({"workdays": ("mon", "xyz")}, "unknown day"),
        ({"start": "25:00"}, "hour value is outside expected range"),
        ({"weekends": ("sat",)}, "Extra inputs are not permitted"),
    ],
    ids=[
        "unknown-zone",
        "misspelt-zone",
        "empty-zone",
        "path-as-zone",
        "end-before-start",
        "end-equals-start",
        "no-workdays",
        "unknown-day",
        "impossible-hour",
        "unknown-setting",
    ],
)
def test_a_bad_calendar_is_refused_with_a_message(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Calendar(**settings)


@pytest.mark.parametrize(
    ("calendar_yaml", "field", "line", "message"),
    [
        pytest.param(
            "  timezone: Mars/Base\n",
            "calendar.timezone",
            4,
            "unknown time zone 'Mars/Base'",
            id="unknown-time-zone",
        ),
        # A problem with the calendar as a whole points at its first line.
        pytest.param(
            '  start: "17:00"\n  end: "08:00"\n',
            "calendar",
            4,
            "must be after start",
            id="end-before-start",
        ),
        pytest.param(
            "  workdays: []\n",
            "calendar.workdays",
            4,
            "at least one working day is needed",
            id="no-workdays",
        ),
    ],
)
def test_a_bad_calendar_in_a_pipeline_file_is_named_with_its_line_and_field(
    calendar_yaml: str, field: str, line: int, message: str
) -> None:
    text = (
        "name: custom\n"
        "version: 1\n"
        "calendar:\n"
        f"{calendar_yaml}"
        "stages:\n"
        "  - {id: review, name: Review, roles: [it]}\n"
    )
    with pytest.raises(InputError) as caught:
        parse_pipeline(text, "custom.yaml")
    (problem,) = caught.value.problems
    assert (problem.source, problem.line, problem.field) == ("custom.yaml", line, field)
    assert message in problem.message
