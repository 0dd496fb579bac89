"""The spending cap as a policy beside the loop: the output folder's budget across its runs,
by spending.py's one rule. It starts from what the folder has committed (spending.Paid, read
from the journal under the run's lock), refuses a run whose rows still to send would pass the
cap (UsageError, nothing sent), is asked before each submission (a Stop, kind spending cap,
when it would pass the cap), and is told what each journal line changes."""

from __future__ import annotations

from .spending import Budget, Estimate, Paid
from .stops import Stop, StopKind


class SpendingCap:
    def __init__(self, budget: Budget, paid: Paid) -> None:
        self.budget = budget
        self._paid = paid
        # billed megapixels the folder has committed: outputs received, and an estimate for
        # each submission that may have been charged without one
        self.committed = paid.megapixels

    def check_start(self, to_send: Estimate, unsized: int = 0) -> None:
        """Before a run: UsageError (exit 2, nothing sent) when the folder's commitments and
        the estimate of the rows still to send (`unsized` of them of unknown size) pass it."""
        self.budget.check_start(self._paid, to_send, unsized)

    def take_over(self, key: str, counted: int) -> None:
        """This run works on a row: it counts `counted` from now on, in place of what the
        folder's journal counted for it."""
        self.committed += counted - self._paid.rows.get(key.encode(), 0)

    def spend(self, change: int) -> None:
        """A journal line changed what a row of this run counts by `change`."""
        self.committed += change

    def before_submission(self, more: int, estimate: int) -> Stop | None:
        """Whether a submission that adds `more` megapixels (a request estimated at
        `estimate`) keeps the folder within the cap; the Stop when it would not."""
        if self.budget.fits(self.committed + more):
            return None
        return Stop(StopKind.SPENDING_CAP, self.budget.stop_reason(self.committed, estimate))
