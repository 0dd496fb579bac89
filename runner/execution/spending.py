"""What a run costs on fal, in the endpoint's billing unit: each output image is billed as its
width x height in megapixels, rounded up to a whole megapixel, where fal's megapixel is
1024 x 1024 pixels (a 1024x1024 or 1024x768 output is 1 MP, 1280x1024 is 2 MP).

The spending cap is the budget of one output folder across all its runs, and one rule says
what counts against it (`row_megapixels`, a row at a time; `paid_from`, a folder's journal as
its one read gives it, `read_paid` reading it; `Budget.fits`, the comparison): an ok row's
outputs as billed, once more for each time it may have been charged twice; a row sent and not
answered (`submitting`, `submitted`, or failed in a way that may have been charged) at its
estimate; plus, before a run, the estimate of every row it may still send. The check before a
run and the check before each submission both apply it (spendingcap.SpendingCap)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import UsageError
from ..folder.journal import (
    FAILED,
    OK,
    SUBMITTED,
    SUBMITTING,
    KeyState,
    last_full_records,
    read_state,
)
from ..folder.names import INPUTS
from ..grid.plan import billed_megapixels
from ..models import Request
from .retry import INFRA_ERROR_TYPES, is_transient


class Estimate(Protocol):
    """What this module reads of a plan or a request's cost (plan.Plan, plan.Cost)."""

    @property
    def megapixels(self) -> int: ...


class Pricer(Protocol):
    """What read_paid needs of plan.Pricing."""

    @property
    def file_fields(self) -> frozenset[str]: ...

    def of(self, request: Request) -> Estimate: ...


# Failures that say the row's last submission charged nothing: turned away or invalid when
# submitted, never sent (the upload of its input failed), cancelled before it ran (while still
# queued: our queue_timeout, or an earlier run's deadline found cancelled when polled), or an
# infrastructure failure, which fal does not bill. Any other failure (no answer, a timeout
# while it may have run, an image that could not be fetched or read...) may have been charged.
UNCHARGED_FAILURES = (
    frozenset({"validation", "refused", "upload", "queue_timeout", "request_cancelled"})
    | INFRA_ERROR_TYPES
)

# Failures that need not be the request's own answer: no answer to the status or result calls
# (transport), a transient error answer on them (http: 5xx, 429...), a timeout (the cancel
# that followed does not stop a request already running), an image that could not be fetched.
_MAYBE_HELD = frozenset({"transport", "http", "timeout", "download"})


def pollable(error_type: str | None, http_status: int | None) -> bool:
    """Whether a failed request's result may still be on the server: the one rule for what
    --retry-failed fetches by request id rather than sending again. Only a failure with no
    answer or a transient one (5xx, 429, 408, 409) is: a final answer (a 422 or another 4xx
    of the model, a lost result's 404, a file's 404, 410 or 403) is not."""
    return error_type in _MAYBE_HELD and (http_status is None or is_transient(http_status))


def fetchable(
    status: str, error_type: str | None, http_status: int | None, request_id: str | None
) -> bool:
    """A failed row whose request the server took and whose result may still be there
    (`pollable`): a run with --retry-failed polls it by its request id, sending nothing and
    paying nothing more (it is sent again only if the server then says the result is gone,
    or that the request was cancelled before it ran)."""
    return status == FAILED and bool(request_id) and pollable(error_type, http_status)


def may_be_charged(status: str, error_type: str | None, attempts: int) -> bool:
    """Whether a row's last submission may have been charged with no output to show: sent
    and unanswered, or failed in a way fal may bill after a submission went out (`attempts`
    counts those: a row whose every submission was refused has none)."""
    if status in (SUBMITTING, SUBMITTED):
        return True
    return status == FAILED and attempts > 0 and error_type not in UNCHARGED_FAILURES


def row_megapixels(
    status: str,
    duplicates: int,
    estimate: int,
    *,
    billed: int = 0,
    error_type: str | None = None,
    attempts: int = 0,
) -> int:
    """What one row of the journal counts against the cap, in billed megapixels: an ok row
    its outputs as billed, and again for each possible duplicate (a duplicate made the same
    image); any other row its estimate if its last submission may have been charged, plus
    one estimate for each possible duplicate."""
    if status == OK:
        return billed * (1 + duplicates)
    return estimate * (may_be_charged(status, error_type, attempts) + duplicates)


@dataclass(frozen=True)
class Paid:
    """What an output folder's journal says this backend was paid, or may have been paid,
    for (in billed megapixels)."""

    received: int = 0  # the ok rows' outputs, once each
    uncertain: int = 0  # the rest: sent and unanswered, failed after a possible charge, duplicates
    submissions: int = 0  # how many submissions `uncertain` counts
    # what each row that is not ok counts: a run that takes the row over counts it anew
    rows: Mapping[bytes, int] = field(default_factory=dict)

    @property
    def megapixels(self) -> int:
        return self.received + self.uncertain


def read_paid(out_dir: Path, pricing: Pricer, backend: str, server: str | None) -> Paid:
    """The folder's Paid for `backend` at `server`, from one read of its journal (a run
    counts it from the read that opens its journal: paid_from)."""
    billed = Billed()
    return paid_from(out_dir, read_state(out_dir, billed), billed, pricing, backend, server)


def paid_from(
    out_dir: Path,
    states: Mapping[bytes, KeyState],
    billed: Billed,
    pricing: Pricer,
    backend: str,
    server: str | None,
) -> Paid:
    """The folder's Paid for `backend` at `server` from its journal's resume state and the
    Billed shown its ok lines in the same read (other backends' rows count nothing: a run
    refuses such a folder). A row that needs an estimate is priced from its own journal
    record: what was sent, its local input files measured as `runner plan` measures them."""
    received = uncertain = submissions = 0
    unpriced: dict[bytes, KeyState] = {}
    for key, state in states.items():
        if not state.made_by(backend, server):
            continue
        if state.status == OK:
            mp = billed.of.get(key, 0)
            received += mp
            uncertain += row_megapixels(OK, state.possible_duplicates, 0, billed=mp) - mp
            submissions += state.possible_duplicates
        elif state.possible_duplicates or may_be_charged(
            state.status, state.error_type, state.attempts
        ):
            unpriced[key] = state
    rows: dict[bytes, int] = {}
    records = last_full_records(out_dir, unpriced.keys())
    for key, state in unpriced.items():
        estimate = _estimate(pricing, records.get(key), out_dir)
        dups, kind = state.possible_duplicates, state.error_type
        rows[key] = row_megapixels(
            state.status, dups, estimate, error_type=kind, attempts=state.attempts
        )
        uncertain += rows[key]
        submissions += dups + may_be_charged(state.status, kind, state.attempts)
    return Paid(received, uncertain, submissions, rows)


def _estimate(pricing: Pricer, record: Mapping[str, Any] | None, out_dir: Path) -> int:
    """The estimate of a journaled request, as the plan prices it: a local input by its file
    (recorded in input_files, or an inline input kept in OUT/inputs), anything else 1 MP."""
    if record is None:
        return 1  # no full line survives (a damaged journal): an input of unknown size
    body = record["input"]
    recorded = record.get("input_files")
    files = {f: Path(p) for f, p in (recorded or {}).items() if isinstance(p, str)}
    for name in pricing.file_fields & body.keys():
        value = body[name]
        if name not in files and isinstance(value, str) and value.startswith("sha256:"):
            kept = sorted((out_dir / INPUTS).glob(value[7:] + ".*"))
            if kept:
                files[name] = kept[0]
    return pricing.of(Request(str(record["key"]), body, {}, files)).megapixels


_OUTPUTS = b'"outputs":['
_SIZE = re.compile(rb'"width":(?P<width>\d+),"height":(?P<height>\d+)')


class Billed:
    """Shown each ok journal line (read_state's LineSeer): the billed megapixels of the last
    ok line of each key. Found with bytes.find, not a JSON parse (a million-row journal has a
    million such lines; most have one output, of a size many lines share); a line spelt
    otherwise is parsed."""

    def __init__(self) -> None:
        self.of: dict[bytes, int] = {}
        self._sizes: dict[bytes, int] = {}  # '"width":W,"height":H' -> billed megapixels

    def see(self, key: bytes, raw: bytes) -> None:
        start = raw.find(_OUTPUTS)
        width = raw.find(b'"width":', start) if start >= 0 else -1
        cut = raw.find(b',"content_type":', width) if width >= 0 else -1
        if cut >= 0 and raw.find(b'"width":', cut) < 0:  # one output, as this runner writes
            size = raw[width:cut]
            mp = self._sizes.get(size)
            if mp is None:
                found = _SIZE.fullmatch(size)
                mp = billed_megapixels(int(found["width"]), int(found["height"])) if found else None
                if mp is None:
                    self.of[key] = _parsed_billed(raw)
                    return
                if len(self._sizes) < 4096:
                    self._sizes[size] = mp
            self.of[key] = mp
            return
        end = raw.find(b',"result":', start)  # what follows the outputs on a line we wrote
        sizes = _SIZE.findall(raw, start, len(raw) if end < 0 else end) if start >= 0 else []
        if sizes and raw.count(b'"width":', start) == len(sizes):
            self.of[key] = sum(billed_megapixels(int(w), int(h)) for w, h in sizes)
        else:
            self.of[key] = _parsed_billed(raw)


def _parsed_billed(raw: bytes) -> int:
    try:
        outputs = json.loads(raw).get("outputs")
    except (ValueError, AttributeError):
        return 0
    total = 0
    for output in outputs if isinstance(outputs, list) else ():
        width = output.get("width") if isinstance(output, dict) else None
        height = output.get("height") if isinstance(output, dict) else None
        if isinstance(width, int) and isinstance(height, int):
            total += billed_megapixels(width, height)
    return total


def usd_text(usd: float) -> str:
    """Dollars as a person writes them: $0.50, $0.325, $12.00."""
    cents = f"{usd:.2f}"
    exact = f"{usd:.3f}"
    return "$" + (cents if exact.endswith("0") or usd >= 10 else exact)


@dataclass(frozen=True)
class Budget:
    """A spending cap in US dollars at a price per billed megapixel: the one comparison the
    check before a run and the check before each submission make."""

    cap: float
    price: float

    def fits(self, megapixels: int) -> bool:
        """Whether `megapixels` in all stay within the cap."""
        if self.price <= 0:
            return True
        return megapixels <= math.floor(self.cap / self.price + 1e-9)

    def usd(self, megapixels: int) -> float:
        return round(megapixels * self.price, 6)

    def check_start(self, paid: Paid, plan: Estimate, unsized: int = 0) -> None:
        """Before a run: UsageError (exit 2, nothing sent) when what the folder has paid for
        and the worst case of what is still to send (`plan`, with `unsized` inputs of unknown
        size) pass the cap. A run with nothing
        to send commits nothing more, and is let go on (it fetches accepted results)."""
        if plan.megapixels == 0 or self.fits(paid.megapixels + plan.megapixels):
            return
        guess = f"; {unsized} inputs of unknown size counted as 1 MP each" if unsized else ""
        mp = plan.megapixels
        usd, size = usd_text(self.usd(mp)), f"({mp} output megapixels{guess})"
        cap = f"the spending cap {usd_text(self.cap)} (limits.max_usd or --max-usd)"
        if paid.megapixels == 0:
            said = f"estimated cost {usd} of the rows still to send {size} exceeds {cap}"
        else:
            said = (
                f"this folder has already committed {usd_text(self.usd(paid.megapixels))} "
                f"({self._paid_words(paid)}) and the rows still to send are estimated at "
                f"{usd} {size}: {usd_text(self.usd(paid.megapixels + mp))} in all exceeds "
                f"{cap}, the budget of this output folder across its runs"
            )
        raise UsageError(
            f"{said}; nothing was sent. HINT: raise the cap, or run fewer rows (sample, --shard)"
        )

    def stop_reason(self, committed: int, more: int) -> str:
        """Why a run sends no more: the next submission would pass the cap."""
        return (
            f"the spending cap {usd_text(self.cap)} is reached: this folder has committed "
            f"{usd_text(self.usd(committed))} (outputs received, and an estimate for each "
            f"submission that may have been charged without one), and the next request "
            f"(about {usd_text(self.usd(more))}) would pass it; requests in flight finish; "
            "raise --max-usd or limits.max_usd to go on"
        )

    def _paid_words(self, paid: Paid) -> str:
        parts = []
        if paid.received:
            parts.append(f"{usd_text(self.usd(paid.received))} for outputs received")
        if paid.uncertain:
            n = paid.submissions
            parts.append(
                f"{usd_text(self.usd(paid.uncertain))} for {n} "
                f"{'submission' if n == 1 else 'submissions'} that may have been charged "
                "without an output (unanswered, or possibly charged twice)"
            )
        return ", ".join(parts)


def check_priced(price: float | None, cap: float) -> float:
    """The endpoint's price, or UsageError (exit 2, nothing sent): a cap cannot be checked
    against an endpoint file that states no price."""
    if price is None:
        raise UsageError(
            f"the spending cap ({usd_text(cap)}) cannot be checked: the endpoint file states "
            "no price; nothing was sent"
        )
    return price
