"""The retry policy, in one place: which failed calls are retried, how long to wait, and when a
resubmission might charge twice (`decide`: a CallError and the operation in, a Decision out),
the one loop that applies it (`retried`), and the failure kind a request is recorded with.

| operation        | retried on                                                        |
|------------------|-------------------------------------------------------------------|
| status, result,  | transport errors, timeouts, 408, 409, 429, any 5xx                |
| download         | (a cancel is sent once, best effort: the deadline is recorded)    |
| submit           | only when the server surely did not accept it: no connection made |
|                  | (refused, name not resolved, TLS, connect timeout), 408, 429,     |
|                  | ingress 5xx, 5xx with an error body. A drop or timeout            |
|                  | after sending is *ambiguous*: resubmitted and counted as a        |
|                  | possible double charge (or failed with --no-resubmit-ambiguous)   |
| any              | never on 401/403 (the run stops; for a download, the request      |
|                  | fails), 422 (recorded, not retried) or a request that could not   |
|                  | be built here (an invalid URL or header: nothing was sent)        |

A submission that cannot connect while no request of the run has reached the server is the
executor's to count: several in a row stop the run (executor.UNREACHABLE_AFTER).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import Enum
from time import time
from typing import TypeVar

from ..errors import AuthError, CallError

T = TypeVar("T")

MAX_RETRY_AFTER = 120.0  # a server asking for longer is capped: the per-request deadline rules
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0

# Infrastructure failures that fal reports on a completed request; none of them is billed.
INFRA_ERROR_TYPES = frozenset(
    {
        "request_timeout",
        "startup_timeout",
        "runner_scheduling_failure",
        "runner_connection_timeout",
        "runner_disconnected",
        "runner_server_error",
        "internal_error",
    }
)


class Verdict(Enum):
    RETRY = "retry"  # call again (same request id, or a submit that surely was not accepted)
    AMBIGUOUS = "ambiguous"  # a submit may have been accepted: resubmitting may charge twice
    FAIL = "fail"  # record the request as failed
    AUTH = "auth"  # credentials refused: stop the whole run


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    wait: float  # seconds before the next try (Retry-After or backoff)


def decide(error: CallError, op: str, attempt: int) -> Decision:
    """What to do after `op` ("submit", "status", "result", "cancel", "download") failed, or
    after a request completed with a failure that is safe to submit again ("resubmit": an
    unbilled infrastructure error or a lost result, as the executor found)."""
    if op == "resubmit":
        return Decision(Verdict.RETRY, backoff(attempt))
    if error.client:  # never sent, and the same request would fail the same way
        return Decision(Verdict.FAIL, 0.0)
    status = error.http_status
    if status in (401, 403):
        # An output URL carries no key (a CDN's 403 is that file's problem, not the run's)
        return Decision(Verdict.FAIL if op == "download" else Verdict.AUTH, 0.0)
    wait = error.retry_after if error.retry_after is not None else backoff(attempt)
    if status is None:  # transport error or timeout
        if op == "submit" and error.sent != "no":
            return Decision(Verdict.AMBIGUOUS, wait)
        return Decision(Verdict.RETRY, wait)
    if status in (408, 429):
        return Decision(Verdict.RETRY, wait)
    if status >= 500:
        if op != "submit" or error.sent == "no":
            return Decision(Verdict.RETRY, wait)
        return Decision(Verdict.AMBIGUOUS, wait)
    if status == 409 and op != "submit":
        return Decision(Verdict.RETRY, wait)
    return Decision(Verdict.FAIL, 0.0)


async def retried(
    call: Callable[[], Awaitable[T]],
    op: str,
    attempts: int,
    on_error: Callable[[CallError, Decision, bool], None] | None = None,
) -> T:
    """`call()`, again while the policy retries its CallError, at most `attempts` calls in all.
    Gives the call's result, or raises the last CallError (AuthError for refused credentials).
    `on_error(error, decision, last)` sees every failure before the wait or the raise, and may
    raise to stop (a submission refused as ambiguous)."""
    failures = 0
    while True:
        try:
            return await call()
        except CallError as error:
            failures += 1
            decision = decide(error, op, failures)
            if decision.verdict is Verdict.AUTH:
                raise AuthError(str(error), error.http_status) from None
            last = decision.verdict is Verdict.FAIL or failures >= attempts
            if on_error is not None:
                on_error(error, decision, last)
            if last:
                raise
        await asyncio.sleep(decision.wait)


def failure_kind(http_status: int | None, error_type: str | None = None) -> str:
    """The `error.type` a failed request is recorded with: `validation` for a 422, fal's own
    error type when it gave one, `transport` when no answer came, else `http`."""
    if http_status == 422:
        return "validation"
    if error_type:
        return error_type
    return "transport" if http_status is None else "http"


def is_retryable_result(http_status: int, error_type: str | None) -> bool:
    """A completed request that failed: may it be submitted again? Infrastructure errors and
    5xx are not billed and safe to retry; validation errors (422) and other 4xx are final."""
    if error_type in INFRA_ERROR_TYPES:
        return True
    return http_status >= 500 or http_status in (408, 429)


def is_transient(http_status: int | None) -> bool:
    """An error answer that says "not now" rather than "no" (408, 409, 429, any 5xx): the
    same call may work later, and says nothing of what the server holds."""
    return http_status is not None and (http_status >= 500 or http_status in (408, 409, 429))


def is_passing(error: CallError) -> bool:
    """A call that failed for want of a connection or an answer, or with a transient error
    answer: it may work later. Anything else is the server's definite answer (404 or 410:
    gone; 401/403: refused; too large) or a request that can never be made (an invalid URL,
    a scheme not followed, a broken data: URI)."""
    if error.client:
        return False
    return error.connect is not None or error.sent == "maybe" or is_transient(error.http_status)


def backoff(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**attempt))."""
    return random.uniform(0.0, min(cap, base * (2 ** max(attempt, 0))))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds or as an HTTP date; capped; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time() if now is None else now)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
