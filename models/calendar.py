"""Business hours in the organisation's time zone: SLA deadlines that skip nights, weekends, holidays."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.types import as_utc

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FULL_NAMES = dict(
    zip(
        WEEKDAYS,
        ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
        strict=True,
    )
)


# When the organisation works: time zone, working days, hours, holidays.
class Calendar(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = "Europe/Berlin"
    workdays: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri")
    start: time = time(8, 0)
    end: time = time(17, 0)
    holidays: tuple[date, ...] = Field(default=())

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (KeyError, ValueError, OSError):
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin)"
            ) from None
        return value

    @field_validator("start", "end")
    @classmethod
    def _local_time(cls, value: time) -> time:
        # A working day's hours are read in the calendar's own time zone.
        if value.tzinfo is not None:
            raise ValueError(
                f"a time of day without a zone, e.g. 08:00 (the calendar's timezone applies), "
                f"not {value.isoformat()}"
            )
        return value

    @field_validator("workdays")
    @classmethod
    def _known_days(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        days = []
        for raw in value:
            name = str(raw).strip().lower()
            short = name[:3]
            if short not in WEEKDAYS or name not in (short, FULL_NAMES[short]):
                raise ValueError(f"unknown day {raw!r} (use mon, tue, wed, thu, fri, sat, sun)")
            days.append(short)
        if not days:
            raise ValueError("at least one working day is needed")
        return tuple(days)

    @model_validator(mode="after")
    def _hours_in_order(self) -> Calendar:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def workday_hours(self) -> float:
        """The working hours of one working day (from start to end)."""
        return (
            datetime.combine(date.min, self.end) - datetime.combine(date.min, self.start)
        ).total_seconds() / 3600

    def today(self, now: datetime) -> date:
        """The date at the organisation's location at the instant `now`."""
        return now.astimezone(self.zone).date()

    def is_workday(self, day: date) -> bool:
        return WEEKDAYS[day.weekday()] in self.workdays and day not in self.holidays

    def shift_workdays(self, day: date, count: int) -> date:
        """The working day `count` working days after `day` (before it if negative; `day`
        itself for 0): Friday shifted by 1 is Monday, by -1 Thursday."""
        step = timedelta(days=1 if count > 0 else -1)
        for _ in range(abs(count)):
            for _ in range(3700):  # ten years of days: a finite bound even for odd calendars
                day += step
                if self.is_workday(day):
                    break
            else:
                raise ValueError("the calendar has no working day within ten years")
        return day

    def add_business_hours(self, start: datetime, hours: float | int) -> datetime:
        """The instant `hours` working hours after `start` (UTC out; DST-safe)."""
        remaining = timedelta(hours=hours)
        zone = self.zone
        cursor = as_utc(start)
        day = start.astimezone(zone).date()
        for _ in range(3700):  # ten years of days: a finite bound even for odd calendars
            if self.is_workday(day):
                opens = datetime.combine(day, self.start, zone).astimezone(UTC)
                closes = datetime.combine(day, self.end, zone).astimezone(UTC)
                begin = max(cursor, opens)
                if begin < closes:
                    available = closes - begin
                    if remaining <= available:
                        return begin + remaining
                    remaining -= available
            day += timedelta(days=1)
            cursor = datetime.combine(day, time(0, 0), zone).astimezone(UTC)
        raise ValueError("the calendar has no working hours within ten years")

    def business_hours_between(self, start: datetime, end: datetime) -> float:
        """Working hours elapsed from start to end (0 if end is before start)."""
        start, end = as_utc(start), as_utc(end)
        if end <= start:
            return 0.0
        zone = self.zone
        total = timedelta()
        day = start.astimezone(zone).date()
        last = end.astimezone(zone).date()
        while day <= last:
            if self.is_workday(day):
                opens = datetime.combine(day, self.start, zone).astimezone(UTC)
                closes = datetime.combine(day, self.end, zone).astimezone(UTC)
                lo, hi = max(opens, start.astimezone(UTC)), min(closes, end.astimezone(UTC))
                if hi > lo:
                    total += hi - lo
            day += timedelta(days=1)
        return total.total_seconds() / 3600


def add_months(day: date, months: int) -> date:
    """The same day `months` later, clamped to the month's last day (31 Jan + 1 = 28/29 Feb)."""
    import calendar as _stdlib_calendar

    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    last = _stdlib_calendar.monthrange(year, month)[1]
    return date(year, month, min(day.day, last))
