"""The one decision a run makes for each row from its journal state: skip it (done, or failed
before), fetch its outputs again, poll it by request id, send it, or send it again as a
possible double charge."""

from __future__ import annotations

import pytest

from runner.execution.decision import Action, decide
from runner.folder.journal import KeyState


def state(
    status: str,
    request_id: str | None = None,
    error_type: str | None = None,
    *,
    attempts: int = 1,
    http_status: int | None = None,
) -> KeyState:
    return KeyState(status, request_id, attempts, 0, error_type, http_status=http_status)


@pytest.mark.parametrize(
    ("row", "retry_failed", "damaged", "action"),
    [
        (None, False, False, Action.SEND),  # never journaled
        (state("ok"), False, False, Action.DONE),
        (state("ok"), True, True, Action.REPAIR),  # an output file is gone: fetched again
        (state("failed", error_type="validation"), False, False, Action.FAILED_BEFORE),
        (state("failed", error_type="validation"), True, False, Action.SEND),  # a 422: unbilled
        # a sync call's timeout: no request id to poll, and it may have been billed
        (state("failed", error_type="timeout"), True, False, Action.SEND_AGAIN),
        (state("failed", error_type="transport", attempts=0), True, False, Action.SEND),
        # the server took it and no answer came: its result is fetched, not paid again
        (state("failed", "r1", error_type="download"), True, False, Action.POLL),
        (state("failed", "r1", error_type="download"), False, False, Action.FAILED_BEFORE),
        # status or result calls answered 5xx or 429 every time: the result may be there
        (state("failed", "r1", error_type="http", http_status=500), True, False, Action.POLL),
        (state("failed", "r1", error_type="http", http_status=429), True, False, Action.POLL),
        # cancelled at its deadline, which does not stop a request already running
        (state("failed", "r1", error_type="timeout"), True, False, Action.POLL),
        # the server's final answer: the result is gone (404), or the model's own 4xx
        (state("failed", "r1", error_type="http", http_status=404), True, False, Action.SEND_AGAIN),
        (state("failed", "r1", error_type="http", http_status=400), True, False, Action.SEND_AGAIN),
        (state("failed", "r1", "download", http_status=404), True, False, Action.SEND_AGAIN),
        (state("failed", "r1", "download", http_status=403), True, False, Action.SEND_AGAIN),
        (state("failed", "r1", "download", http_status=503), True, False, Action.POLL),
        (state("failed", "r1", error_type="validation", http_status=422), True, False, Action.SEND),
        # polled, it had been cancelled before it ran: never billed
        (state("failed", "r1", error_type="request_cancelled"), True, False, Action.SEND),
        (state("submitted", "r1"), False, False, Action.POLL),
        (state("submitting"), False, False, Action.SEND_AGAIN),  # killed between send and line
        (state("refused", attempts=0), False, False, Action.SEND),  # turned away: charged nothing
        (state("failed", error_type="runner_disconnected"), True, False, Action.SEND),
    ],
)
def test_each_journal_state_has_one_action(row, retry_failed, damaged, action):
    assert decide(row, ours=True, damaged=damaged, retry_failed=retry_failed) is action


def test_another_backends_record_is_never_this_rows_result():
    for status in ("ok", "submitted", "submitting", "failed"):
        row = state(status, "r1", error_type="timeout")
        assert decide(row, ours=False, damaged=False, retry_failed=False) is Action.SEND


def test_only_settled_rows_are_counted_without_a_request_and_only_sends_cost_ahead():
    assert {a for a in Action if a.settled} == {Action.DONE, Action.FAILED_BEFORE}
    assert {a for a in Action if a.sends} == {Action.SEND, Action.SEND_AGAIN}
