"""What a spec would do, without sending anything: request count, axes and their sizes, the
first rows, and a cost estimate. One lazy pass over the expansion."""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ..datauri import parse
from ..endpoints import Endpoint
from ..models import Request
from .localimages import inspect as inspect_image

PREVIEW_ROWS = 5
MEGAPIXEL = 1024 * 1024  # pixels: fal bills "per megapixel, rounded up" in these


@dataclass(frozen=True)
class Plan:
    count: int
    axes: tuple[tuple[str, int], ...]
    first: tuple[Request, ...]
    megapixels: int  # billed output megapixels (rounded up per image), estimated
    usd: float | None  # None when the endpoint has no price
    # Requests whose input image is a URL: its size is unknown before it is fetched, assumed 1 MP.
    unsized_inputs: int = 0
    # Seconds of fal processing for all requests together (the endpoint file's timing
    # assumption, scaled by megapixels and steps); None when the file states no timing.
    work_seconds: float | None = None

    def seconds_at(self, concurrency: int) -> float | None:
        """Estimated wall time on fal with `concurrency` requests running at once."""
        if self.work_seconds is None or self.count == 0:
            return None if self.work_seconds is None else 0.0
        return self.work_seconds / max(1, min(concurrency, self.count))

    def to_dict(self) -> dict[str, object]:
        return {
            "count": self.count,
            "axes": dict(self.axes),
            "first": [
                {"key": r.key, "input": dict(r.input), "vars": dict(r.vars)} for r in self.first
            ],
            "estimated_megapixels": self.megapixels,
            "estimated_usd": self.usd,
            "unsized_inputs": self.unsized_inputs,
            "estimated_fal_work_seconds": (
                None if self.work_seconds is None else round(self.work_seconds, 1)
            ),
        }


def make_plan(
    requests: Iterable[Request],
    axes: Iterable[tuple[str, int]],
    endpoint: Endpoint,
    preview: int = PREVIEW_ROWS,
) -> Plan:
    tally = Tally(endpoint, preview)
    for request in requests:
        tally.add(request)
    return tally.plan(axes)


@dataclass(frozen=True, slots=True)
class Cost:
    """What one request adds to a plan."""

    megapixels: int  # billed output megapixels (an input of unknown size counts as 1)
    unsized: bool  # an input given as a URL: its size is unknown before it is fetched
    work: float  # megapixels x steps / the endpoint's reference steps: the time estimate's unit


class Pricing:
    """The cost of requests to one endpoint, from the few body fields billing reads (file
    inputs, `num_images`, the steps field): each field value gives a fact, and a request's
    facts give its Cost, computed once per distinct set of facts."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.file_fields = endpoint.file_fields
        timing = endpoint.timing
        self.steps_field: str | None = timing.get("steps_field")
        steps_default = (
            endpoint.fields.get(self.steps_field, {}).get("default") if self.steps_field else None
        )
        self.steps_default = steps_default
        self.reference_steps = timing.get("reference_steps") or steps_default or 1
        self.billed = self.file_fields | {"num_images"}
        if self.steps_field:
            self.billed |= {self.steps_field}
        self._memo: dict[tuple[tuple[str, Any], ...], Cost] = {}

    def fact(self, field: str, value: Any, local: Path | str | None) -> Any:
        """What the value of a billed `field` says: a file input's megapixels (None: a URL,
        size unknown), else the value itself. `local`: the file's path or data: URI."""
        if field not in self.file_fields:
            return value
        if isinstance(local, Path):
            return _megapixels(local)
        if isinstance(local, str):
            return _inline_megapixels(str(value), local)
        return None

    def cost(self, facts: tuple[tuple[str, Any], ...]) -> Cost:
        """The Cost of a request whose billed fields give `facts` ((field, fact), sorted)."""
        try:
            return self._memo[facts]
        except KeyError:
            pass
        except TypeError:  # an unhashable (and so invalid) value: no memo
            return self._cost(dict(facts))
        if len(self._memo) >= 4096:
            self._memo.clear()
        found = self._memo[facts] = self._cost(dict(facts))
        return found

    def of(self, request: Request) -> Cost:
        body, files, inline = request.input, request.files, request.inline
        facts = tuple(
            (f, self.fact(f, body[f], files.get(f) or inline.get(f)))
            for f in sorted(self.billed & body.keys())
        )
        return self.cost(facts)

    def _cost(self, facts: dict[str, Any]) -> Cost:
        # Outputs keep the input's size; an input of unknown size (a URL) counts as 1 megapixel.
        per_image, unsized = 1, False
        for f in self.file_fields & facts.keys():
            if facts[f] is None:
                unsized = True
            else:
                per_image = max(per_image, facts[f])
        images = facts.get("num_images", 1)
        mp = per_image * (images if isinstance(images, int) else 1)
        steps = facts.get(self.steps_field, self.steps_default) if self.steps_field else None
        ratio = steps / self.reference_steps if isinstance(steps, int | float) else 1
        return Cost(mp, unsized, mp * ratio)


class Tally:
    """A plan built one request at a time, or from the costs validation counted in its one
    pass over the grid (Checked.costs, given to `count`), so a plan expands no grid again."""

    def __init__(self, endpoint: Endpoint, preview: int = PREVIEW_ROWS) -> None:
        self.endpoint, self.preview = endpoint, preview
        self.pricing = Pricing(endpoint)
        self.rows, self.megapixels, self.unsized = 0, 0, 0
        self.work = 0.0  # sum of megapixels x steps / reference steps
        self.first: list[Request] = []

    def add(self, request: Request) -> None:
        """Count a request and keep it among the first rows shown."""
        if len(self.first) < self.preview:
            self.first.append(request)
        self.count(request.key, self.pricing.of(request))

    def count(self, key: str, cost: Cost) -> None:
        """Count a request by its cost alone (the first rows come from elsewhere)."""
        self.rows += 1
        self.megapixels += cost.megapixels
        self.unsized += cost.unsized
        self.work += cost.work

    def count_all(self, costs: Iterable[tuple[Cost, int]]) -> None:
        """Count requests by their costs: (a cost, how many requests have it)."""
        for cost, n in costs:
            self.rows += n
            self.megapixels += cost.megapixels * n
            self.unsized += cost.unsized * n
            self.work += cost.work * n

    def plan(self, axes: Iterable[tuple[str, int]]) -> Plan:
        price = self.endpoint.usd_per_megapixel
        usd = round(self.megapixels * price, 4) if price is not None else None
        per_request = self.endpoint.timing.get("seconds_per_request")
        work = self.work * per_request if isinstance(per_request, int | float) else None
        first = tuple(self.first[: self.preview])
        return Plan(self.rows, tuple(axes), first, self.megapixels, usd, self.unsized, work)


def billed_megapixels(width: int, height: int) -> int:
    """Whole megapixels fal bills for one image of this size (at least 1)."""
    return max(1, -(-(width * height) // MEGAPIXEL))


_INLINE: dict[str, int] = {}  # sha256 reference of a data: URI -> its billed megapixels


def _inline_megapixels(digest: str, uri: str) -> int:
    """A data: URI's image size, decoded once per distinct content."""
    if digest not in _INLINE:
        if len(_INLINE) >= 4096:
            _INLINE.clear()
        parsed = parse(uri)
        try:
            if parsed is None:
                raise ValueError("not a data: URI")
            with Image.open(io.BytesIO(parsed.content(strict=False))) as img:
                width, height = img.size
            _INLINE[digest] = billed_megapixels(width, height)
        except (OSError, ValueError, Image.DecompressionBombError):
            _INLINE[digest] = 1
    return _INLINE[digest]


def _megapixels(path: Path) -> int:
    facts = inspect_image(path)
    if facts.problem is not None:
        return 1  # validation says what it is
    return billed_megapixels(facts.width, facts.height)


def explain_cost(plan: Plan, endpoint: Endpoint, backend: str, concurrency: int) -> list[str]:
    """Plan's cost and time lines, in words: the estimate, its basis, and the fal time."""
    price = endpoint.usd_per_megapixel
    if price is None:
        return ["cost estimate: unknown (the endpoint file states no price)"]
    on_fal = f"${plan.usd:.2f} ({plan.megapixels} output megapixels)"
    if backend == "local":
        lines = [f"cost estimate: free offline (backend local); on fal about {on_fal}"]
    else:
        lines = [f"cost estimate: about {on_fal}"]
    basis = (
        f"cost basis: ${price:g} per output megapixel, each image rounded up to whole "
        "megapixels; an output has its input's size"
    )
    if plan.unsized_inputs:
        n = plan.unsized_inputs
        basis += (
            f"; {n} {'request has' if n == 1 else 'requests have'} an input given as a URL, "
            "whose size is unknown before it is fetched: counted as 1 MP each"
        )
    lines.append(basis)
    seconds = plan.seconds_at(concurrency)
    if seconds is not None:
        assumed = endpoint.timing.get("seconds_per_request")
        steps = endpoint.timing.get("reference_steps", 40)
        lines.append(
            f"time estimate on fal: about {_duration(seconds)} at concurrency {concurrency} "
            f"(assumed {assumed:g} s per 1-MP request at {steps} steps, scaled by size and "
            "steps; no queue wait; fal runs only as many at once as your account allows)"
        )
    return lines


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
