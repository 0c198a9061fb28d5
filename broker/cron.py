"""Cron expressions (UTC) for periodic actors: ``@actor(periodic="*/5 * * * *")``.

Five fields, as in crontab(5): minute, hour, day of month, month, day of week (0 or 7 is
Sunday; ``jan``..``dec`` and ``sun``..``sat`` are accepted). Each field is ``*``, a number, a
range ``a-b``, a step ``*/n`` or ``a-b/n``, or a comma-separated list of those. As in cron, when
both day of month and day of week are restricted, a day matching either one runs. A sixth field
in front gives seconds (``*/10 * * * * *``: every 10 seconds), for schedules finer than a minute.
The shorthands ``@hourly``, ``@daily``, ``@weekly``, ``@monthly`` and ``@yearly`` work too.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

_SHORTHANDS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MONTHS = {name: i for i, name in enumerate(("jan", "feb", "mar", "apr", "may", "jun"), 1)}
_MONTHS |= {name: i for i, name in enumerate(("jul", "aug", "sep", "oct", "nov", "dec"), 7)}
_DAYS = {name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_SEARCH_DAYS = 366 * 8  # far enough back for any valid expression (29 February included)


@dataclass(frozen=True)
class Cron:
    """A parsed expression; :meth:`previous` is the latest time it names at or before a moment."""

    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, expression: str) -> Cron:
        """Raises ``ValueError`` naming the field that is wrong."""
        if not isinstance(expression, str):
            raise ValueError(f"a cron expression is a string, not {expression!r}")
        text = _SHORTHANDS.get(expression.strip().lower(), expression)
        fields = text.split()
        if len(fields) == 5:
            fields = ["0", *fields]
        if len(fields) != 6:
            raise ValueError(f"{expression!r} is not a cron expression: it needs 5 fields (or 6, seconds first)")
        second, minute, hour, day, month, weekday = fields
        weekdays = _field(weekday, 0, 7, "day of week", _DAYS)
        return cls(
            expression=expression,
            seconds=_field(second, 0, 59, "second"),
            minutes=_field(minute, 0, 59, "minute"),
            hours=_field(hour, 0, 23, "hour"),
            days=_field(day, 1, 31, "day of month"),
            months=_field(month, 1, 12, "month", _MONTHS),
            weekdays=frozenset(d % 7 for d in weekdays),
            days_restricted=day != "*",
            weekdays_restricted=weekday != "*",
        )

    def _day_matches(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        in_month, in_week = day.day in self.days, (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_month or in_week
        return in_month and in_week

    def previous(self, moment: dt.datetime) -> dt.datetime | None:
        """The latest time this expression names at or before ``moment`` (UTC, whole seconds)."""
        moment = moment.astimezone(dt.UTC).replace(microsecond=0)
        day = moment.date()
        for back in range(_SEARCH_DAYS):
            if self._day_matches(day):
                limit = moment.time() if back == 0 else dt.time(23, 59, 59)
                found = self._latest_time(limit)
                if found is not None:
                    return dt.datetime.combine(day, found, tzinfo=dt.UTC)
            day -= dt.timedelta(days=1)
        return None

    def _latest_time(self, limit: dt.time) -> dt.time | None:
        for hour in sorted((h for h in self.hours if h <= limit.hour), reverse=True):
            minute_cap = limit.minute if hour == limit.hour else 59
            for minute in sorted((m for m in self.minutes if m <= minute_cap), reverse=True):
                second_cap = limit.second if (hour, minute) == (limit.hour, limit.minute) else 59
                seconds = [s for s in self.seconds if s <= second_cap]
                if seconds:
                    return dt.time(hour, minute, max(seconds))
        return None

    def __str__(self) -> str:
        return self.expression


def _field(text: str, low: int, high: int, name: str, names: dict[str, int] | None = None) -> frozenset[int]:
    values: set[int] = set()
    for part in text.lower().split(","):
        span, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if span == "*":
                start, end = low, high
            elif "-" in span:
                first, _, last = span.partition("-")
                start, end = _value(first, names), _value(last, names)
            else:
                start = _value(span, names)
                end = high if step_text else start
        except ValueError:
            raise ValueError(f"{name} field {text!r} is not valid") from None
        if step < 1 or not low <= start <= end <= high:
            raise ValueError(f"{name} field {text!r} is out of range {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _value(text: str, names: dict[str, int] | None) -> int:
    if names and text in names:
        return names[text]
    return int(text)
