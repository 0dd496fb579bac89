"""What a spec would do, without sending anything: request count, axes and their sizes, the
first rows, and a cost estimate. One lazy pass over the expansion."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image

from .endpoints import Endpoint
from .models import Request

PREVIEW_ROWS = 5


@dataclass(frozen=True)
class Plan:
    count: int
    axes: tuple[tuple[str, int], ...]
    first: tuple[Request, ...]
    megapixels: int  # billed output megapixels (rounded up per image), estimated
    usd: float | None  # None when the endpoint has no price

    def to_dict(self) -> dict[str, object]:
        return {
            "count": self.count,
            "axes": dict(self.axes),
            "first": [
                {"key": r.key, "input": dict(r.input), "vars": dict(r.vars)} for r in self.first
            ],
            "estimated_megapixels": self.megapixels,
            "estimated_usd": self.usd,
        }


def make_plan(
    requests: Iterable[Request],
    axes: Iterable[tuple[str, int]],
    endpoint: Endpoint,
    preview: int = PREVIEW_ROWS,
) -> Plan:
    count, megapixels = 0, 0
    first: list[Request] = []
    for request in requests:
        count += 1
        if len(first) < preview:
            first.append(request)
        megapixels += _output_megapixels(request)
    price = endpoint.usd_per_megapixel
    usd = round(megapixels * price, 4) if price is not None else None
    return Plan(count, tuple(axes), tuple(first), megapixels, usd)


def _output_megapixels(request: Request) -> int:
    """Outputs keep the input's size; a remote input is counted as one megapixel."""
    images = request.input.get("num_images", 1)
    per_image = 1
    for path in request.files.values():
        per_image = max(per_image, _megapixels(Path(path)))
    return per_image * (images if isinstance(images, int) else 1)


@lru_cache(maxsize=4096)
def _megapixels(path: Path) -> int:
    try:
        with Image.open(path) as img:  # reads the header only
            width, height = img.size
    except (OSError, ValueError):
        return 1
    return max(1, math.ceil(width * height / 1_000_000))
