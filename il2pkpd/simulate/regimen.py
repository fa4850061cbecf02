"""The regimen language: dosing schedules as text a clinician reads, and as Python values.

A regimen is one or more *phases* separated by ``;`` (optionally followed by ``then``). Each
phase is a dose, a route and a schedule::

    1 MIU SC daily x5
    600,000 IU/kg IV 15min q8h x14 hold 5,6
    1 MIU/m2 SC qd x56
    0.26 MIU/m2 SC q3d for 4 weeks
    0.33 MIU/m2 SC daily x14; then 1 MIU/m2 SC daily x14
    600000 IU/kg IV 15 min q8h x14; rest 9 days; 600000 IU/kg IV 15 min q8h x14
    1.5 MIU SC once start day 3

Grammar (case-insensitive; ``[...]`` optional, ``|`` alternatives)::

    regimen  := item ( ";" ["then"] item )*
    item     := "rest" N (h | d | days | weeks)            a gap before the next phase
              | phase
    phase    := amount unit ["/" (kg | m2)] route [infusion] [schedule] [count] [hold] [start]
    amount   := 1 | 0.33 | 600000 | 600,000 | 6e5
    unit     := IU | kIU | MIU | mg | ug | µg | mcg | ng
    route    := SC | IV
    infusion := ["over"] N (min | h)   (IV only: a constant-rate infusion; "bolus" or nothing
                                        means an IV bolus)
    schedule := once | daily | qd | bid | q12h | qod | q<N>h | q<N>d | q<N>w | weekly
              | every N (h | hours | d | days | weeks) | every other day
    count    := x N [doses]            N doses
              | x N days | for N (days | weeks | doses)   as many doses as start in that time
    hold     := hold [dose | doses] R ("," R)*            skip these dose numbers (1 = first)
              | hold day[s] R ("," R)*                    skip doses given on these days
    R        := N | N-N                                   one number or an inclusive range
    start    := start day N | start N (h | d)             when the phase begins

Conventions (documented here once):

- Time 0 is the start of the regimen. Day *k* is the interval ``[(k-1)*24 h, k*24 h)``, so
  ``start day 1`` is time 0 and ``start day 3`` is 48 h. ``start`` is measured from time 0 of
  the regimen; without it a phase starts where the previous one ends.
- A phase of *n* doses every *tau* hours ends ``n * tau`` after its start (where the next dose
  would have been); a ``once`` phase lasts one day. ``rest`` adds a gap after that.
- Dose numbers and days in ``hold`` count within their phase (dose 1 and day 1 are the phase's
  first). Held doses are not given, and the phase's other doses keep their times.
- ``x N`` counts doses, not days: ``q8h x14`` is 14 doses over 4.67 days; ``daily x5`` is 5 doses.
- Amounts per kg or per m2 are resolved per subject from the covariates ``WT`` (kg) and ``BSA``
  (m2) when the regimen becomes an event table (:func:`regimen_to_dataset`).
- Mass doses (mg, µg, ng) become IU only through an explicit specific activity
  (:class:`il2pkpd.units.SpecificActivity`), never silently.

Examples
--------
>>> r = parse_regimen("1 MIU SC daily x5")
>>> r.phases[0].interval, r.phases[0].n_doses
(24.0, 5)
>>> [round(t) for t in parse_regimen("1 MIU SC daily x5 hold 3").dose_table()["TIME"]]
[0, 24, 72, 96]
>>> parse_regimen("1 MIU SC daily x5").to_text()
'1 MIU SC q24h x5'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np
import pandas as pd

from il2pkpd.errors import RegimenError

__all__ = [
    "Route",
    "Phase",
    "Regimen",
    "parse_regimen",
    "DOSE_UNITS",
]

#: Dose units the language accepts: name -> (kind, factor to IU or to mg).
DOSE_UNITS: dict[str, tuple[str, float]] = {
    "IU": ("activity", 1.0),
    "kIU": ("activity", 1.0e3),
    "MIU": ("activity", 1.0e6),
    "mg": ("mass", 1.0),
    "ug": ("mass", 1.0e-3),
    "ng": ("mass", 1.0e-6),
}

_UNIT_ALIASES = {
    "iu": "IU", "kiu": "kIU", "miu": "MIU", "mg": "mg", "ug": "ug", "µg": "ug", "μg": "ug",
    "mcg": "ug", "ng": "ng",
}

_HOURS = {
    "min": 1 / 60, "mins": 1 / 60, "minute": 1 / 60, "minutes": 1 / 60, "m": 1 / 60,
    "h": 1.0, "hr": 1.0, "hrs": 1.0, "hour": 1.0, "hours": 1.0,
    "d": 24.0, "day": 24.0, "days": 24.0,
    "w": 168.0, "wk": 168.0, "wks": 168.0, "week": 168.0, "weeks": 168.0,
}


class Route(StrEnum):
    """Route of administration: subcutaneous (into the depot) or intravenous (into central)."""

    SC = "SC"
    IV = "IV"


@dataclass(frozen=True)
class Phase:
    """One dosing phase: *n_doses* doses every *interval* hours starting at *start*.

    Parameters
    ----------
    amount : float
        Dose amount per administration in *unit* (per kg or m2 when *per* is set).
    unit : str
        One of :data:`DOSE_UNITS` (``IU``, ``kIU``, ``MIU``, ``mg``, ``ug``, ``ng``).
    route : Route
        ``SC`` (depot) or ``IV`` (central).
    interval : float, h
        Time between doses (0 for a single dose).
    n_doses : int
        Number of scheduled doses (held doses included).
    start : float, h
        Time of the first dose from the start of the regimen.
    per : {None, "kg", "m2"}
        Amount per kg body weight (``WT``) or per m2 body-surface area (``BSA``).
    duration : float, h
        Infusion duration (IV only; 0 means a bolus).
    hold : tuple of int
        Dose numbers (1-based within the phase) that are not given.
    """

    amount: float
    unit: str
    route: Route
    interval: float = 0.0
    n_doses: int = 1
    start: float = 0.0
    per: str | None = None
    duration: float = 0.0
    hold: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "route", Route(str(self.route).upper()))
        unit = _UNIT_ALIASES.get(str(self.unit).lower(), self.unit)
        object.__setattr__(self, "unit", unit)
        object.__setattr__(self, "hold", tuple(sorted({int(h) for h in self.hold})))
        problems = []
        if not (math.isfinite(self.amount) and self.amount > 0):
            problems.append(f"amount must be a positive number, got {self.amount!r}")
        if unit not in DOSE_UNITS:
            problems.append(f"unit {self.unit!r} is not one of {', '.join(DOSE_UNITS)}")
        if self.per not in (None, "kg", "m2"):
            problems.append(f"per must be None, 'kg' or 'm2', got {self.per!r}")
        if int(self.n_doses) != self.n_doses or self.n_doses < 1:
            problems.append(f"n_doses must be a whole number >= 1, got {self.n_doses!r}")
        if not (math.isfinite(self.interval) and self.interval >= 0):
            problems.append(f"interval must be >= 0 h, got {self.interval!r}")
        if self.n_doses > 1 and self.interval <= 0:
            problems.append("several doses need an interval > 0 h")
        if not (math.isfinite(self.start) and self.start >= 0):
            problems.append(f"start must be >= 0 h, got {self.start!r}")
        if not (math.isfinite(self.duration) and self.duration >= 0):
            problems.append(f"duration must be >= 0 h, got {self.duration!r}")
        if self.duration > 0 and self.route is not Route.IV:
            problems.append("an infusion duration applies to IV doses only")
        if self.n_doses > 1 and self.duration > self.interval + 1e-12:
            problems.append(f"the infusion ({self.duration:g} h) is longer than the dosing "
                            f"interval ({self.interval:g} h)")
        bad_hold = [h for h in self.hold if not 1 <= h <= self.n_doses]
        if bad_hold:
            problems.append(f"held dose numbers {bad_hold} are outside 1..{self.n_doses}")
        if len(self.hold) >= self.n_doses and self.n_doses >= 1 and not bad_hold:
            problems.append("every dose of the phase is held")
        if problems:
            raise RegimenError("invalid dosing phase: " + "; ".join(problems))
        object.__setattr__(self, "n_doses", int(self.n_doses))
        object.__setattr__(self, "amount", float(self.amount))
        object.__setattr__(self, "interval", float(self.interval))
        object.__setattr__(self, "start", float(self.start))
        object.__setattr__(self, "duration", float(self.duration))

    @property
    def length(self) -> float:
        """Hours from the phase's start to where the next phase begins by default."""
        if self.interval == 0:
            return 24.0
        return self.n_doses * self.interval

    @property
    def dose_times(self) -> np.ndarray:
        """Times (h, from regimen start) of the doses actually given."""
        numbers = np.arange(1, self.n_doses + 1)
        keep = ~np.isin(numbers, self.hold)
        return self.start + (numbers[keep] - 1) * self.interval

    def amount_iu(self, specific_activity=None) -> float:
        """Amount per administration in IU (per kg or m2 when :attr:`per` is set).

        Parameters
        ----------
        specific_activity : il2pkpd.units.SpecificActivity, optional
            Needed for mass units (mg, µg, ng); a mass is never converted silently.

        Raises
        ------
        UnitError
            A mass dose without a specific activity.
        """
        from il2pkpd.units import convert

        return float(convert(self.amount, self.unit, "IU", specific_activity=specific_activity))

    def to_text(self) -> str:
        """The phase in the regimen language (parses back to an equal phase, start aside)."""
        unit = self.unit + (f"/{self.per}" if self.per else "")
        parts = [f"{self.amount:.12g} {unit} {self.route.value}"]
        if self.route is Route.IV and self.duration > 0:
            minutes = self.duration * 60
            parts.append(f"{minutes:.12g}min" if minutes < 120 else f"{self.duration:.12g}h")
        if self.interval == 0:
            parts.append("once")
        else:
            parts.append(f"q{self.interval:.12g}h x{self.n_doses}")
        if self.hold:
            parts.append("hold " + ",".join(str(h) for h in self.hold))
        return " ".join(parts)


@dataclass(frozen=True)
class Regimen:
    """A dosing regimen: phases on one time axis (h from the regimen's start).

    Build one with :func:`parse_regimen` or from :class:`Phase` values.

    Parameters
    ----------
    phases : tuple of Phase
        The dosing phases, each with its absolute start time.
    text : str
        The text the regimen was parsed from (or a generated description).
    """

    phases: tuple[Phase, ...]
    text: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        phases = tuple(self.phases)
        if not phases:
            raise RegimenError("a regimen needs at least one dosing phase")
        object.__setattr__(self, "phases", phases)
        if not self.text:
            object.__setattr__(self, "text", self.to_text())

    @property
    def end(self) -> float:
        """Hours from the regimen's start to the end of its last phase."""
        return max(p.start + p.length for p in self.phases)

    @property
    def n_doses(self) -> int:
        """Number of doses actually given (held doses excluded)."""
        return int(sum(len(p.dose_times) for p in self.phases))

    def dose_table(self, specific_activity=None) -> pd.DataFrame:
        """One row per dose given, sorted by time.

        Columns: ``TIME`` (h), ``PHASE`` (0-based), ``NUMBER`` (1-based within the phase),
        ``AMOUNT_IU`` (per kg or m2 when ``PER`` is set), ``PER``, ``ROUTE``, ``DURATION`` (h).
        """
        rows = []
        for k, phase in enumerate(self.phases):
            numbers = [n for n in range(1, phase.n_doses + 1) if n not in phase.hold]
            iu = phase.amount_iu(specific_activity)
            for n in numbers:
                rows.append({
                    "TIME": phase.start + (n - 1) * phase.interval, "PHASE": k, "NUMBER": n,
                    "AMOUNT_IU": iu, "PER": phase.per or "", "ROUTE": phase.route.value,
                    "DURATION": phase.duration,
                })
        table = pd.DataFrame(rows, columns=["TIME", "PHASE", "NUMBER", "AMOUNT_IU", "PER",
                                            "ROUTE", "DURATION"])
        return table.sort_values(["TIME", "PHASE"], kind="stable").reset_index(drop=True)

    def to_text(self) -> str:
        """The regimen in the regimen language; ``parse_regimen(r.to_text()) == r``."""
        parts = []
        t = 0.0
        for phase in self.phases:
            text = phase.to_text()
            if abs(phase.start - t) > 1e-9:
                text += f" start {phase.start:.12g}h"
            parts.append(text)
            t = phase.start + phase.length
        return "; ".join(parts)

    def then(self, other: Regimen | Phase, gap: float = 0.0) -> Regimen:
        """A regimen with *other* appended after this one ends (plus *gap* hours)."""
        phases = other.phases if isinstance(other, Regimen) else (other,)
        shift = self.end + gap - min(p.start for p in phases)
        moved = tuple(replace(p, start=p.start + shift) for p in phases)
        return Regimen(self.phases + moved)

    def __str__(self) -> str:
        return self.text


# --------------------------------------------------------------------------------------------
# Parser: a scanner over the text with one look-ahead, positions kept for error messages.

_WS = re.compile(r"\s*")
_NUMBER = re.compile(r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][+-]?\d+)?|\.\d+")
_PLAIN_INT = re.compile(r"\d+")
_PLAIN_NUM = re.compile(r"\d+(?:\.\d+)?|\.\d+")
_UNIT = re.compile(r"(kIU|MIU|IU|mg|ug|µg|μg|mcg|ng)(?![A-Za-z])", re.IGNORECASE)
_PER = re.compile(r"/\s*(kg|m\^?2|m²)(?![A-Za-z0-9])", re.IGNORECASE)
_ROUTE = re.compile(r"(SC|s\.c\.|subcut(?:aneous)?|IV|i\.v\.|intravenous)(?![A-Za-z])",
                    re.IGNORECASE)
_DUR_UNIT = re.compile(r"(minutes|minute|mins|min|hours|hour|hrs|hr|h)(?![A-Za-z])",
                       re.IGNORECASE)
_TIME_UNIT = re.compile(r"(minutes|minute|mins|min|hours|hour|hrs|hr|h|days|day|d|weeks|week|"
                        r"wks|wk|w)(?![A-Za-z])", re.IGNORECASE)
_QN = re.compile(r"q(\d+(?:\.\d+)?)(h|d|w)(?![A-Za-z0-9])", re.IGNORECASE)
_KEYWORD = re.compile(r"[A-Za-z]+(?![A-Za-z])")

_SCHEDULE_WORDS = {
    "once": 0.0, "single": 0.0, "daily": 24.0, "qd": 24.0, "od": 24.0, "bid": 12.0,
    "qod": 48.0, "weekly": 168.0, "qw": 168.0, "qwk": 168.0, "tid": 8.0,
}

_SCHEDULE_EXPECTED = ("a schedule: once, daily, qd, bid, tid, qod, weekly, q<N>h, q<N>d, q<N>w, "
                      "every <N> hours|days|weeks, every other day")


class _Scanner:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def skip_ws(self) -> None:
        self.pos = _WS.match(self.text, self.pos).end()

    def at_end(self) -> bool:
        self.skip_ws()
        return self.pos >= len(self.text)

    def peek(self, pattern: re.Pattern) -> re.Match | None:
        self.skip_ws()
        return pattern.match(self.text, self.pos)

    def take(self, pattern: re.Pattern) -> re.Match | None:
        m = self.peek(pattern)
        if m:
            self.pos = m.end()
        return m

    def peek_word(self) -> str:
        m = self.peek(_KEYWORD)
        return m.group(0).lower() if m else ""

    def take_word(self, *words: str) -> str | None:
        self.skip_ws()
        m = _KEYWORD.match(self.text, self.pos)
        if m and m.group(0).lower() in words:
            self.pos = m.end()
            return m.group(0).lower()
        return None

    def take_literal(self, literal: str) -> bool:
        self.skip_ws()
        if self.text.startswith(literal, self.pos):
            self.pos += len(literal)
            return True
        return False

    def fail(self, expected: str, pos: int | None = None, found: str | None = None) -> None:
        self.skip_ws()
        pos = self.pos if pos is None else pos
        raise _regimen_error(self.text, pos, expected, found)


def _regimen_error(text: str, pos: int, expected: str, found: str | None = None) -> RegimenError:
    if found is None:
        m = re.compile(r"\S+").match(text, pos)
        found = f"'{m.group(0)}'" if m else "the end of the text"
    line = text.replace("\n", " ").replace("\t", " ")
    message = (f"cannot read the regimen at character {pos + 1}: expected {expected}, "
               f"found {found}\n  {line}\n  {' ' * pos}^\n"
               "Example: '1 MIU SC daily x5', '600000 IU/kg IV 15min q8h x14 hold 5,6', "
               "'0.33 MIU/m2 SC daily x14; then 1 MIU/m2 SC daily x14'")
    return RegimenError(message)


def _number(s: _Scanner, pattern: re.Pattern = _NUMBER, what: str = "a number") -> float:
    m = s.take(pattern)
    if not m:
        s.fail(what)
    return float(m.group(0).replace(",", ""))


def _integer(s: _Scanner, what: str) -> int:
    start = (s.skip_ws(), s.pos)[1]
    m = s.take(_PLAIN_NUM)
    if not m:
        s.fail(what)
    value = float(m.group(0))
    if value != int(value) or value < 1:
        s.fail(what, pos=start, found=f"'{m.group(0)}'")
    return int(value)


def _ranges(s: _Scanner, what: str) -> list[tuple[int, int, int]]:
    """``R ("," R)*`` with ``R := N | N-N``; returns (low, high, position) triples."""
    out = []
    while True:
        s.skip_ws()
        pos = s.pos
        low = _integer(s, what)
        high = low
        if s.take_literal("-"):
            high = _integer(s, "the end of the range (a whole number)")
            if high < low:
                s.fail(f"a range from low to high (got {low}-{high})", pos=pos,
                       found=f"'{low}-{high}'")
        out.append((low, high, pos))
        save = s.pos
        if s.take_literal(","):
            if s.peek(_PLAIN_INT):
                continue
            s.pos = save
        return out


def _parse_phase(s: _Scanner, default_start: float) -> Phase:
    s.skip_ws()
    amount = _number(s, what="a dose amount (e.g. '1 MIU', '600000 IU/kg', '0.33 MIU/m2')")
    m = s.take(_UNIT)
    if not m:
        s.fail("a dose unit: IU, kIU, MIU, mg, ug (µg, mcg) or ng")
    unit = _UNIT_ALIASES[m.group(1).lower()]
    per = None
    pm = s.take(_PER)
    if pm:
        per = "kg" if pm.group(1).lower() == "kg" else "m2"
    elif s.peek(re.compile(r"/")):
        s.fail("'/kg' or '/m2' after the dose unit")
    m = s.take(_ROUTE)
    if not m:
        s.fail("a route: SC or IV")
    route = Route.IV if m.group(1).lower().replace(".", "") in ("iv", "intravenous") else Route.SC

    duration = 0.0
    dpos = (s.skip_ws(), s.pos)[1]
    if route is Route.IV:
        if s.take_word("bolus"):
            pass
        else:
            save = s.pos
            s.take_word("over", "infusion")
            dpos = (s.skip_ws(), s.pos)[1]
            if s.peek(_PLAIN_NUM):
                value = _number(s, _PLAIN_NUM)
                um = s.take(_DUR_UNIT)
                if not um:
                    s.fail("an infusion duration unit: min or h")
                duration = value * _HOURS[um.group(1).lower()]
                if duration <= 0:
                    s.fail("an infusion duration > 0", pos=dpos)
                s.take_word("infusion")
            else:
                if s.pos != save:
                    s.fail("an infusion duration such as '15 min' or '2 h'")
    elif s.peek(_PLAIN_NUM) and s.peek(re.compile(r"\d+(?:\.\d+)?\s*(min|h)\b", re.I)):
        s.fail("a schedule after the SC route (an infusion duration is for IV doses only)")

    # schedule
    interval: float | None = None
    spos = (s.skip_ws(), s.pos)[1]
    qm = s.take(_QN)
    if qm:
        interval = float(qm.group(1)) * _HOURS[qm.group(2).lower()]
        if interval <= 0:
            s.fail("an interval > 0", pos=spos)
    else:
        word = s.peek_word()
        if word in _SCHEDULE_WORDS:
            s.take_word(word)
            interval = _SCHEDULE_WORDS[word]
        elif word == "every":
            s.take_word("every")
            if s.take_word("other"):
                if not s.take_word("day"):
                    s.fail("'day' (every other day)")
                interval = 48.0
            else:
                value = _number(s, _PLAIN_NUM, what="a number (every <N> hours|days|weeks)")
                um = s.take(_TIME_UNIT)
                if not um:
                    s.fail("a time unit: hours, days or weeks")
                interval = value * _HOURS[um.group(1).lower()]
                if interval <= 0:
                    s.fail("an interval > 0", pos=spos)

    # count
    n_doses: int | None = None
    cpos = (s.skip_ws(), s.pos)[1]
    count_span: float | None = None
    xm = s.take(re.compile(r"[x×]\s*(?=\d)", re.IGNORECASE))
    if xm:
        n = _integer(s, "a whole number of doses after 'x'")
        um = s.take(re.compile(r"(doses|dose|days|day|weeks|week|d|w)(?![A-Za-z])", re.I))
        if um and um.group(1).lower() not in ("doses", "dose"):
            count_span = n * _HOURS[um.group(1).lower()]
        else:
            n_doses = n
    elif s.take_word("for"):
        value = _number(s, _PLAIN_NUM, what="a number (for <N> days|weeks|doses)")
        um = s.take(re.compile(r"(doses|dose|days|day|weeks|week|d|w)(?![A-Za-z])", re.I))
        if not um:
            s.fail("'days', 'weeks' or 'doses'")
        if um.group(1).lower() in ("doses", "dose"):
            if value != int(value) or value < 1:
                s.fail("a whole number of doses", pos=cpos)
            n_doses = int(value)
        else:
            count_span = value * _HOURS[um.group(1).lower()]

    if interval is None:
        if n_doses is not None or count_span is not None:
            s.fail(_SCHEDULE_EXPECTED + " before the count", pos=cpos,
                   found=f"'{s.text[cpos:s.pos].strip()}'")
        if s.peek(_KEYWORD) and s.peek_word() not in ("hold", "start", "then"):
            s.fail(_SCHEDULE_EXPECTED)
        interval = 0.0
    if interval == 0.0:
        if (n_doses or 1) != 1 or count_span is not None:
            s.fail("no count after 'once' (a single dose)", pos=cpos,
                   found=f"'{s.text[cpos:s.pos].strip()}'")
        n_doses = 1
    elif count_span is not None:
        n_doses = max(1, math.ceil(count_span / interval - 1e-9))
    elif n_doses is None:
        s.fail("a count after the schedule: 'x<N>' doses or 'for <N> days|weeks'")

    # modifiers: hold, start (any order, each at most once)
    hold: set[int] = set()
    start = default_start
    seen = set()
    pending_days: list[tuple[int, int, int]] = []
    while True:
        mpos = (s.skip_ws(), s.pos)[1]
        word = s.peek_word()
        if word == "hold" and "hold" not in seen:
            seen.add("hold")
            s.take_word("hold")
            if s.take_word("day", "days"):
                pending_days = _ranges(s, "a day number or range, e.g. 'hold days 3-4'")
            else:
                s.take_word("dose", "doses")
                for low, high, pos in _ranges(s, "a dose number or range, e.g. 'hold 5,6'"):
                    if high > n_doses:
                        s.fail(f"dose numbers within 1..{n_doses} (this phase has {n_doses} "
                               "doses)", pos=pos, found=f"'{low}'" if low == high
                               else f"'{low}-{high}'")
                    hold.update(range(low, high + 1))
        elif word == "start" and "start" not in seen:
            seen.add("start")
            s.take_word("start")
            if s.take_word("day"):
                start = (_integer(s, "a day number (day 1 is the first day)") - 1) * 24.0
            else:
                s.take_word("at")
                value = _number(s, _PLAIN_NUM, what="'day <N>' or a time such as '6 h'")
                um = s.take(_TIME_UNIT)
                if not um:
                    s.fail("a time unit: h or d")
                start = value * _HOURS[um.group(1).lower()]
        else:
            if word in ("hold", "start"):
                s.fail(f"one '{word}' per phase", pos=mpos)
            break

    for low, high, pos in pending_days:
        lo_t, hi_t = (low - 1) * 24.0, high * 24.0
        numbers = [n for n in range(1, n_doses + 1)
                   if lo_t - 1e-9 <= (n - 1) * interval < hi_t - 1e-9]
        if not numbers:
            last_day = math.floor((n_doses - 1) * interval / 24.0 + 1e-9) + 1
            s.fail(f"days on which this phase gives a dose (days 1-{last_day})", pos=pos,
                   found=f"'{low}'" if low == high else f"'{low}-{high}'")
        hold.update(numbers)
    if len(hold) >= n_doses:
        s.fail("a hold that leaves at least one dose", pos=cpos)
    duration_ok = duration <= interval + 1e-12 or n_doses == 1
    if not duration_ok:
        s.fail(f"an infusion no longer than the dosing interval ({interval:g} h)", pos=dpos)
    return Phase(amount=amount, unit=unit, route=route, interval=interval, n_doses=n_doses,
                 start=start, per=per, duration=duration, hold=tuple(sorted(hold)))


def parse_regimen(text: str) -> Regimen:
    """Parse a regimen written in the regimen language (see the module docstring).

    Parameters
    ----------
    text : str
        For example ``"1 MIU SC daily x5"`` or ``"600000 IU/kg IV 15min q8h x14 hold 5,6"``.

    Returns
    -------
    Regimen

    Raises
    ------
    RegimenError
        When the text does not parse; the message shows the text, a caret under the position
        and what was expected there.

    Examples
    --------
    >>> r = parse_regimen("0.33 MIU/m2 SC daily x14; then 1 MIU/m2 SC daily x14")
    >>> [(p.amount, p.per, p.start) for p in r.phases]
    [(0.33, 'm2', 0.0), (1.0, 'm2', 336.0)]
    >>> parse_regimen("1 MIU SC dialy x5")
    Traceback (most recent call last):
    ...
    il2pkpd.errors.RegimenError: cannot read the regimen at character 10: expected a schedule: ...
    """
    if not isinstance(text, str):
        raise RegimenError(f"a regimen must be text, got {type(text).__name__}")
    s = _Scanner(text)
    if s.at_end():
        s.fail("a dosing phase such as '1 MIU SC daily x5'")
    phases: list[Phase] = []
    t = 0.0
    while True:
        if s.take_word("rest", "pause", "break", "off"):
            value = _number(s, _PLAIN_NUM, what="a duration (rest <N> days)")
            um = s.take(_TIME_UNIT)
            if not um:
                s.fail("a time unit: h, days or weeks")
            t += value * _HOURS[um.group(1).lower()]
        else:
            phase = _parse_phase(s, default_start=t)
            phases.append(phase)
            t = phase.start + phase.length
        if s.at_end():
            break
        if s.take_literal(";"):
            s.take_word("then")
        elif not s.take_word("then"):
            s.fail("';' or 'then' between phases, 'hold ...', 'start ...' or the end of the "
                   "regimen")
        if s.at_end():
            s.fail("another phase after ';'")
    if not phases:
        s.fail("at least one dosing phase (not only 'rest')", pos=0)
    return Regimen(tuple(phases), text=text.strip())
