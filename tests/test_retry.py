from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from runner.errors import CallError
from runner.retry import (
    MAX_RETRY_AFTER,
    Verdict,
    backoff,
    decide,
    is_retryable_result,
    parse_retry_after,
)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_gets_retry_on_transient_statuses(status):
    assert decide(CallError("x", http_status=status), "status", 1).verdict is Verdict.RETRY


def test_gets_retry_on_transport_errors():
    assert decide(CallError("x", sent="maybe"), "result", 1).verdict is Verdict.RETRY


@pytest.mark.parametrize("status", [401, 403])
def test_auth_stops_everything(status):
    for op in ("submit", "status", "result"):
        assert decide(CallError("x", http_status=status), op, 1).verdict is Verdict.AUTH


def test_validation_is_never_retried():
    assert decide(CallError("x", http_status=422), "submit", 1).verdict is Verdict.FAIL
    assert decide(CallError("x", http_status=422), "result", 1).verdict is Verdict.FAIL


def test_submit_retries_only_when_surely_not_accepted():
    assert decide(CallError("refused", sent="no"), "submit", 1).verdict is Verdict.RETRY
    assert (
        decide(CallError("429", http_status=429, sent="no"), "submit", 1).verdict is Verdict.RETRY
    )
    assert (
        decide(CallError("500 body", http_status=500, sent="no"), "submit", 1).verdict
        is Verdict.RETRY
    )
    assert decide(CallError("dropped", sent="maybe"), "submit", 1).verdict is Verdict.AMBIGUOUS
    assert (
        decide(CallError("bare 502", http_status=502, sent="maybe"), "submit", 1).verdict
        is Verdict.AMBIGUOUS
    )


def test_retry_after_wins_over_backoff():
    decision = decide(CallError("x", http_status=429, retry_after=7.0, sent="no"), "submit", 1)
    assert decision.wait == 7.0


def test_backoff_is_full_jitter_and_capped():
    waits = [backoff(20) for _ in range(200)]
    assert all(0 <= w <= 30 for w in waits)
    assert max(waits) > 5  # jitter spreads over the whole range, not a fixed beat
    assert all(0 <= backoff(0) <= 0.5 for _ in range(50))


def test_retry_after_seconds_date_and_cap():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = datetime.now(UTC)
    in_ten = format_datetime(now + timedelta(seconds=10), usegmt=True)
    assert 8 <= parse_retry_after(in_ten, now.timestamp()) <= 11
    assert parse_retry_after("100000") == MAX_RETRY_AFTER
    assert parse_retry_after("-5") == 0.0


def test_completed_errors():
    assert is_retryable_result(503, "runner_disconnected")
    assert is_retryable_result(504, "request_timeout")
    assert is_retryable_result(500, None)
    assert not is_retryable_result(422, None)
    assert not is_retryable_result(400, None)
