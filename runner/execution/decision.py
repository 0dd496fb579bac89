"""What a run does with one row, from the row's journal state: the one rule a resume follows,
for the rows the executor takes and for the spending cap's count of the rows still to send.
Pure: a KeyState (or None) and three facts in, an Action out."""

from __future__ import annotations

from enum import Enum

from ..folder.journal import FAILED, OK, SUBMITTED, KeyState
from .spending import fetchable, may_be_charged


class Action(Enum):
    DONE = "done"  # ok in the journal: counted, nothing sent
    FAILED_BEFORE = "failed before"  # failed in an earlier run, left so (no --retry-failed)
    REPAIR = "repair"  # ok, but an output file is missing or damaged: fetched again
    POLL = "poll"  # the server took it: its result is fetched by request id, nothing sent
    SEND = "send"  # never sent, or refused every time: sent as new
    SEND_AGAIN = "send again"  # may have been charged already: sent, a possible duplicate

    @property
    def settled(self) -> bool:
        """The row is only counted: no Request is built for it."""
        return self in (Action.DONE, Action.FAILED_BEFORE)

    @property
    def sends(self) -> bool:
        """The row goes to the server as a submission (what the spending cap counts ahead)."""
        return self in (Action.SEND, Action.SEND_AGAIN)


def decide(state: KeyState | None, *, ours: bool, damaged: bool, retry_failed: bool) -> Action:
    """The action for a row whose journal state is `state` (None: not in the journal).
    `ours`: the state was made by this run's backend and fal server (another backend's
    record is never this row's result); `damaged`: an ok row's output file is missing or
    resized; `retry_failed`: --retry-failed."""
    if state is None or not ours:
        return Action.SEND
    status = state.status
    if status == OK:
        return Action.REPAIR if damaged else Action.DONE
    if status == FAILED and not retry_failed:
        return Action.FAILED_BEFORE
    polled = status == SUBMITTED and bool(state.request_id)
    if polled or fetchable(status, state.error_type, state.http_status, state.request_id):
        # Queued earlier, or failed where its result may still be on the server: polled by
        # its id whatever --mode this run uses (sending it again would pay again for a
        # result the queue holds)
        return Action.POLL
    if may_be_charged(status, state.error_type, state.attempts):
        # sent before, maybe charged (a crash between sending and journaling, or a failure
        # after the server may have run it): sending it again may pay twice
        return Action.SEND_AGAIN
    return Action.SEND
