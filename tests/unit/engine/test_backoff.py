"""Retry arithmetic: the delay between attempts over the whole range the schema allows
(issue 10, "Retry arithmetic")."""

from __future__ import annotations

import math
import re
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kurable.api.v1alpha1 import duration_seconds
from kurable.api.v1alpha1._base import DURATION_PATTERN
from kurable.api.v1alpha1.workflow import Backoff, Retry
from kurable.engine import decide
from kurable.engine.decide import StepError
from kurable.engine.journal import apply, fold

from .test_decide import T0, start, to_record
from .test_failures import http, simulate

MAX_ATTEMPTS = Retry.model_fields["max_attempts"].metadata[1].le
"""The schema's maximum of maxAttempts (read from the model, so the test follows it)."""

_number = st.builds(
    lambda whole, frac: whole + (f".{frac}" if frac else ""),
    st.text("0123456789", min_size=1, max_size=40),
    st.one_of(st.none(), st.text("0123456789", min_size=1, max_size=20)),
)
durations = (
    st.lists(
        st.builds(lambda n, unit: n + unit, _number, st.sampled_from(["ms", "s", "m", "h", "d"])),
        min_size=1,
        max_size=3,
    )
    .map("".join)
    .filter(lambda text: len(text) <= 64)  # Duration's maxLength
)
"""Every duration the CRD accepts: its pattern, at most 64 characters."""

backoffs = st.builds(
    Backoff,
    initial=durations,
    factor=st.floats(1.0, 10.0),
    max=durations,
    jitter=st.floats(0.0, 1.0),
)


@settings(max_examples=400, deadline=None)
@given(
    backoff=st.one_of(st.none(), backoffs),
    attempt=st.integers(1, MAX_ATTEMPTS),
    key=st.text(max_size=20),
)
def test_backoff_is_finite_non_negative_within_max_and_deterministic(
    backoff: Backoff | None, attempt: int, key: str
) -> None:
    if backoff is not None:  # the strategy yields what the CRD accepts
        assert re.fullmatch(DURATION_PATTERN, backoff.initial)
        assert re.fullmatch(DURATION_PATTERN, backoff.max)
    retry = Retry(max_attempts=MAX_ATTEMPTS, backoff=backoff)
    delay = decide.backoff_delay(retry, attempt, key).total_seconds()
    longest = duration_seconds(backoff.max) if backoff is not None else 300.0
    assert math.isfinite(delay)
    assert 0.0 <= delay <= longest
    assert delay <= decide.HORIZON.total_seconds()
    assert decide.backoff_delay(retry, attempt, key).total_seconds() == delay


@settings(max_examples=200, deadline=None)
@given(
    initial=st.integers(1, 10_000),
    factor=st.floats(1.0, 10.0),
    cap=st.integers(1, 600_000),
    jitter=st.floats(0.0, 1.0),
    attempt=st.integers(1, MAX_ATTEMPTS),
)
def test_backoff_is_the_capped_exponential_jittered_down_by_at_most_its_fraction(
    initial: int, factor: float, cap: int, jitter: float, attempt: int
) -> None:
    """d = min(max, initial * factor^(attempt-1)); the delay lies in [d * (1 - jitter), d]."""
    backoff = Backoff(initial=f"{initial}ms", factor=factor, max=f"{cap}ms", jitter=jitter)
    delay = decide.backoff_delay(Retry(backoff=backoff), attempt, "uid/step").total_seconds()
    exponent = (attempt - 1) * math.log(factor) + math.log(initial / 1000)
    d = cap / 1000 if exponent >= math.log(cap / 1000) else math.exp(exponent)
    assert d * (1 - jitter) - 1e-6 <= delay <= d + 1e-6


def test_field_report_jitter_never_takes_the_delay_above_max() -> None:
    """`backoff: {initial: 200ms, factor: 2, max: 300ms, jitter: 0.5}` reached ~0.43 s."""
    backoff = Backoff(initial="200ms", factor=2, max="300ms", jitter=0.5)
    retry = Retry(max_attempts=50, backoff=backoff)
    delays = [
        decide.backoff_delay(retry, attempt, f"uid-{n}/call").total_seconds()
        for attempt in range(1, 50)
        for n in range(20)
    ]
    assert max(delays) <= 0.3
    # Equal jitter at the cap: delays spread over [0.15, 0.3], not all at 0.3.
    assert min(delays) >= 0.1 - 1e-9
    assert len({round(d, 3) for d in delays}) > 10


def test_field_report_320_attempts_of_factor_10_do_not_overflow_and_the_run_fails() -> None:
    """`maxAttempts: 320, factor: 10, initial: 1ms, max: 1ms`, always failing: attempt 310
    raised OverflowError, so the failure could never be journaled."""
    retry = {
        "maxAttempts": 320,
        "backoff": {"initial": "1ms", "factor": 10, "max": "1ms"},
        "retryOn": ["HttpServerError"],
    }
    policy = Retry.model_validate(retry)
    assert all(
        decide.backoff_delay(policy, n, "k") <= timedelta(milliseconds=1) for n in range(1, 321)
    )
    # The whole run, folded record by record (simulate() refolds: too slow for 960 records).
    journal = start({"steps": [http("call", retry=retry)]})
    state, clock = fold(journal), T0
    for _ in range(2000):
        decision = decide.next_decision(state, clock)
        if isinstance(decision, decide.Done):
            break
        if isinstance(decision, decide.Wait):
            assert decision.until is not None
            clock = max(clock, decision.until)
            continue
        if isinstance(decision, decide.Act):
            error = StepError("HttpServerError", "500")
            decision = decide.outcome(state, decision, clock, error=error)
        state = apply(state, to_record(decision, state.records, clock))
    assert state.phase == "Failed" and state.reason == "StepFailed"
    assert state.steps["call"].attempts == 320


def test_a_huge_duration_the_schema_allows_neither_overflows_nor_loops() -> None:
    huge = "9" * 62 + "d"
    retry = Retry(max_attempts=3, backoff=Backoff(initial=huge, max=huge, jitter=0))
    assert decide.backoff_delay(retry, 2, "k") == decide.HORIZON
    spec = {"timeout": huge, "steps": [{"name": "nap", "sleep": {"duration": huge}}]}
    journal = simulate(spec, limit=10)
    # The timer and the deadline fall at the same horizon: the deadline wins, the run ends.
    assert fold(journal).reason == "Timeout"


@pytest.mark.parametrize(
    ("longest", "seconds"), [("8011ms", 8.011), ("5m8ms0.462s", 300.47), ("0.0000015s", 1e-6)]
)
def test_a_delay_capped_at_max_is_max_to_the_microsecond_never_above(
    longest: str, seconds: float
) -> None:
    """Found by the property tests: float products (8.011 * 1e6) lost a microsecond, and a
    float sum (300 + 0.008 + 0.462) put max a bit below the delay."""
    backoff = Backoff(initial=longest, factor=2, max=longest, jitter=0)
    delay = decide.backoff_delay(Retry(max_attempts=3, backoff=backoff), 2, "uid/step")
    assert delay.total_seconds() == seconds


def test_a_cap_of_centuries_is_not_exceeded_where_floats_skip_microseconds() -> None:
    # Found by the property above: 19e9 s is past 2**53 microseconds, where the nearest
    # float to the cap in microseconds lay above the cap itself.
    backoff = Backoff(initial="1s", factor=8.0, max="0.253ms19000000000.1s", jitter=0.0)
    retry = Retry(max_attempts=MAX_ATTEMPTS, backoff=backoff)
    delay = decide.backoff_delay(retry, 14, "").total_seconds()
    assert delay <= duration_seconds(backoff.max)
    assert delay > duration_seconds(backoff.max) - 1e-5
