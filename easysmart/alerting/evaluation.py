"""The pure logic of alerting, on the readings' own times: excursions of a sensor beyond a bound, flapping,
an equipment's silence threshold from its upload cadence. No SQL and no clock here: the engine reads the
readings, the alerts and the time and hands them in.

An excursion starts at the first of consecutive readings beyond the bound and fires once they have stayed
beyond for `for_s` (t1 − t0 ≥ for_s); a gap between two readings longer than `gap_s` ends the run. A firing
excursion ends at the first reading back inside the bound (less the hysteresis) once the readings have stayed
inside for `resolve_for_s`; readings in the hysteresis band neither fire nor resolve. A held state (a door)
lasts until the next reading, gaps included, so a door opened at t0 and closed at t1 ≥ t0 + for_s was an
excursion even when no reading came in between.

Flapping: a resolution that would be the `flap_transitions`-th transition (fired or resolved) of the rule and
sensor within `flap_window_s` is held back, so the alert stays open until the readings have stayed inside for
the whole window; excursions in between are folded into it (its `transitions` counts them), and nothing is
notified for them.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Iterable, Sequence


@dataclass(frozen=True)
class Sample:
    """One reading as a rule sees it: its time and the value the rule watches (temperature, door 1/0,
    battery_pct)."""

    ts: datetime
    value: float


@dataclass(frozen=True)
class Bound:
    above: float | None = None
    below: float | None = None
    hysteresis: float = 0.0

    def beyond(self, value: float) -> bool:
        return (self.above is not None and value > self.above) or (self.below is not None and value < self.below)

    def back_inside(self, value: float) -> bool:
        return (self.above is None or value <= self.above - self.hysteresis) and (
            self.below is None or value >= self.below + self.hysteresis
        )

    def excess(self, value: float) -> float:
        """How far beyond the bound the value is (the peak is the value with the largest excess)."""
        over = value - self.above if self.above is not None else float("-inf")
        under = self.below - value if self.below is not None else float("-inf")
        return max(over, under)

    def worse(self, a: float, b: float) -> float:
        return b if self.excess(b) > self.excess(a) else a


@dataclass(frozen=True)
class Policy:
    """How a rule turns samples into excursions."""

    bound: Bound
    for_s: float
    resolve_for_s: float
    gap_s: float  # a longer gap between readings ends a run
    flap_transitions: int = 4
    flap_window_s: float = 1800.0
    # A state (a door) holds until the next reading: open at t0 and closed at t1 was open for t1 - t0.
    held: bool = False


@dataclass
class Excursion:
    started_at: datetime  # the first reading beyond the bound
    trigger_value: float  # its value
    fired_at: datetime  # the reading at which the duration was reached
    peak_value: float
    ended_at: datetime | None = None  # the first reading back inside, once resolved
    folded: int = 0  # transitions folded into it while flapping
    alert_id: str | None = None  # the open alert it continues, when it began before the samples


@dataclass
class _Run:
    start: datetime
    value: float
    peak: float


@dataclass
class _Transitions:
    """Times of the rule's and sensor's transitions, to tell flapping."""

    times: list[datetime] = field(default_factory=list)

    def within(self, end: datetime, window_s: float) -> int:
        start = end - timedelta(seconds=window_s)
        return sum(1 for t in self.times if start < t <= end)


def excursions(
    samples: Iterable[Sample],
    policy: Policy,
    ongoing: Excursion | None = None,
    history: Sequence[datetime] = (),
) -> list[Excursion]:
    """The excursions found in time-ordered samples. `ongoing` is an excursion already firing before the first
    sample (an open alert); `history` the times of earlier transitions (alerts' starts and ends) for flapping."""
    found: list[Excursion] = [ongoing] if ongoing is not None else []
    current = ongoing
    transitions = _Transitions(sorted(history))
    run: _Run | None = None
    inside_since: datetime | None = None
    held = False  # a resolution held back by flapping
    previous: datetime | None = None
    bound = policy.bound
    for sample in samples:
        ts, value = sample.ts, sample.value
        # A held state lasts through a gap; a sampled value does not (the readings missed may have been inside).
        gap = not policy.held and previous is not None and (ts - previous).total_seconds() > policy.gap_s
        previous = ts
        if current is None:
            if gap:
                run = None
            if not bound.beyond(value):
                if run is not None and policy.held and (ts - run.start).total_seconds() >= policy.for_s:
                    reached = run.start + timedelta(seconds=policy.for_s)
                    found.append(Excursion(run.start, run.value, reached, run.peak, ended_at=ts))
                    transitions.times += [run.start, ts]
                run = None
                continue
            if run is None:
                run = _Run(ts, value, value)
            else:
                run.peak = bound.worse(run.peak, value)
            if (ts - run.start).total_seconds() >= policy.for_s:
                current = Excursion(run.start, run.value, ts, run.peak)
                found.append(current)
                transitions.times.append(run.start)
                run = None
            continue
        if gap:
            inside_since = None  # unseen readings may have been beyond
        if bound.back_inside(value):
            inside_since = inside_since or ts
            inside_s = (ts - inside_since).total_seconds()
            if inside_s < policy.resolve_for_s:
                continue
            flapping = transitions.within(ts, policy.flap_window_s) + 1 >= policy.flap_transitions
            if flapping and inside_s < policy.flap_window_s:
                held = True
                continue
            current.ended_at = inside_since
            transitions.times.append(inside_since)
            current, inside_since, held = None, None, False
            continue
        if bound.beyond(value):
            if held:
                current.folded += 2  # a resolution and a new firing, folded into the open alert
                held = False
            current.peak_value = bound.worse(current.peak_value, value)
        inside_since = None
    return found


def silence_threshold_s(upload_times: Sequence[datetime], minimum_s: float, cadence_factor: float) -> float:
    """The silence an equipment is allowed: the larger of the minimum and `cadence_factor` × the median gap
    between its recent uploads."""
    times = sorted(set(upload_times))
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
    if not gaps:
        return float(minimum_s)
    return max(float(minimum_s), cadence_factor * statistics.median(gaps))


def is_late(fired_at: datetime, received_at: datetime, late_after_s: float) -> bool:
    """An alert is late when its duration was reached longer ago than the bound before the upload arrived."""
    return (received_at - fired_at).total_seconds() > late_after_s


def in_window(windows: Iterable[tuple[datetime, datetime]], at: datetime) -> bool:
    """True when a maintenance window [start, end) contains the time."""
    return any(start <= at < end for start, end in windows)


def suppressed(windows: Iterable[tuple[datetime, datetime]], excursion: Excursion, last_seen: datetime) -> bool:
    """True when a maintenance window holds the whole firing part of the excursion: it fired inside the window
    and ended before the window did, or has not been seen past it yet. An excursion that outlasts the window
    (a defrost that does not recover) fires once the readings pass the window's end."""
    for start, end in windows:
        if start <= excursion.fired_at < end:
            return (excursion.ended_at or last_seen) < end
    return False
