"""A circuit breaker for one remote provider: pure logic, the clock is passed in.

Closed: requests flow; `failure_threshold` consecutive failures open it. Open: requests
are refused at once with the time left (so an outage answers 503 + Retry-After in
milliseconds instead of every caller waiting out its own timeouts). After the cool-down
one trial request is let through (half-open): success closes the breaker, failure opens
it again with a doubled cool-down (capped). A provider's Retry-After lengthens a cool-down,
never shortens it. Nothing needs a restart: the breaker heals by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    failure_threshold: int = 5
    cooldown_s: float = 1.0
    max_cooldown_s: float = 30.0
    trial_timeout_s: float = 60.0  # a trial that never reported back frees the half-open slot after this
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_until: float = 0.0
    opened_at: float | None = None  # when it last left `closed` (the clock passed in); None while closed
    last_error: str | None = None  # what the last counted failure was, for the operator
    _current_cooldown: float = 0.0
    _trial_in_flight: bool = False
    _trial_started: float = 0.0

    def allow(self, now: float) -> tuple[bool, float]:
        """(may this request go, seconds until one may) — the second is 0 when allowed."""
        if self.state == BreakerState.CLOSED:
            return True, 0.0
        if self.state == BreakerState.OPEN:
            if now < self.opened_until:
                return False, self.opened_until - now
            self.state = BreakerState.HALF_OPEN
            self._trial_in_flight = False
        if self._trial_in_flight and now - self._trial_started < self.trial_timeout_s:
            return False, max(self.cooldown_s / 2, 0.1)  # half-open: one trial at a time
        self._trial_in_flight = True
        self._trial_started = now
        return True, 0.0

    def record_success(self) -> None:
        self.state = BreakerState.CLOSED
        self.opened_at = None
        self.failures = 0
        self._current_cooldown = 0.0
        self._trial_in_flight = False

    def record_failure(self, now: float, retry_after: float | None = None, reason: str | None = None) -> None:
        """Count a failure of the provider (not of the caller's input)."""
        self.failures += 1
        self.last_error = reason or self.last_error
        if self.state == BreakerState.HALF_OPEN or self.failures >= self.failure_threshold:
            if self.state == BreakerState.HALF_OPEN:
                self._current_cooldown = min(max(self._current_cooldown, self.cooldown_s) * 2, self.max_cooldown_s)
            else:
                self._current_cooldown = self.cooldown_s
            wait = max(self._current_cooldown, min(retry_after or 0.0, self.max_cooldown_s))
            if self.state == BreakerState.CLOSED:
                self.opened_at = now
            self.state = BreakerState.OPEN
            self.opened_until = now + wait
            self._trial_in_flight = False

    def describe(self, now: float) -> dict:
        """What an operator sees: the state, for how long it has not been closed, the last error."""
        open_for = None if self.opened_at is None else round(now - self.opened_at, 1)
        return {"state": self.state.value, "open_for_s": open_for, "last_error": self.last_error}

    def release_trial(self) -> None:
        """A half-open trial ended without telling us about the provider (cancelled, caller error)."""
        self._trial_in_flight = False
