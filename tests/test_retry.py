from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from runner.errors import AuthError, CallError
from runner.execution.retry import (
    MAX_RETRY_AFTER,
    Decision,
    Verdict,
    backoff,
    decide,
    failure_kind,
    is_retryable_result,
    parse_retry_after,
    retried,
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


def test_a_refused_download_fails_the_request_not_the_run():
    for status in (401, 403):
        error = CallError("x", http_status=status)
        assert decide(error, "download", 1).verdict is Verdict.FAIL


class Flaky:
    """A call failing with `errors` in turn, then answering "done"."""

    def __init__(self, *errors: CallError) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def soon(status: int | None = 503) -> CallError:
    return CallError("x", http_status=status, retry_after=0.0, sent="no")


async def test_retried_until_it_answers():
    call = Flaky(soon(), soon(None), soon(429))
    seen = []
    result = await retried(call, "status", 8, lambda e, d, last: seen.append(last))
    assert result == "done" and call.calls == 4 and seen == [False, False, False]


async def test_retried_gives_up_after_the_attempts_with_the_last_error():
    call = Flaky(*(soon() for _ in range(10)))
    seen = []
    with pytest.raises(CallError):
        await retried(call, "status", 3, lambda e, d, last: seen.append(last))
    assert call.calls == 3 and seen == [False, False, True]


async def test_retried_stops_at_once_on_a_final_answer():
    call = Flaky(CallError("bad", http_status=422))
    with pytest.raises(CallError):
        await retried(call, "submit", 8)
    assert call.calls == 1
    with pytest.raises(AuthError):
        await retried(Flaky(CallError("key", http_status=401)), "status", 8)


async def test_on_error_may_stop_the_retries():
    class Refused(Exception):
        pass

    def refuse(error: CallError, decision: Decision, last: bool) -> None:
        if decision.verdict is Verdict.AMBIGUOUS:
            raise Refused

    call = Flaky(CallError("dropped", sent="maybe", retry_after=0.0))
    with pytest.raises(Refused):
        await retried(call, "submit", 8, refuse)
    assert call.calls == 1


def test_failure_kinds():
    assert failure_kind(422, "whatever") == "validation"
    assert failure_kind(503, "runner_disconnected") == "runner_disconnected"
    assert failure_kind(None) == "transport"
    assert failure_kind(500) == "http"
