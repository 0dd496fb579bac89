"""What a run costs on fal, in the endpoint's billing unit: each output image is billed as its
width x height in megapixels, rounded up to a whole megapixel, where fal's megapixel is
1024 x 1024 pixels (a 1024x1024 or 1024x768 output is 1 MP, 1280x1024 is 2 MP). Gives the
billed megapixels of an image and the check of an estimate against a spending cap."""

from __future__ import annotations

from .errors import UsageError

MEGAPIXEL = 1024 * 1024  # pixels: fal bills "per megapixel, rounded up" in these


def billed_megapixels(width: int, height: int) -> int:
    """Whole megapixels fal bills for one image of this size (at least 1)."""
    return max(1, -(-(width * height) // MEGAPIXEL))


def check_cap(usd: float | None, megapixels: int, cap: float, unsized: int = 0) -> None:
    """UsageError (exit 2, nothing sent) when the estimate `usd` exceeds `cap`, or cannot be
    made (the endpoint file states no price)."""
    if usd is None:
        raise UsageError(
            f"the spending cap (${cap:g}) cannot be checked: the endpoint file states no "
            "price; nothing was sent"
        )
    if usd > cap:
        guess = f"; {unsized} inputs of unknown size counted as 1 MP each" if unsized else ""
        raise UsageError(
            f"estimated cost ${usd:.2f} of the rows still to run ({megapixels} output "
            f"megapixels{guess}) exceeds the "
            f"spending cap ${cap:g} (limits.max_usd or --max-usd); nothing was sent. Raise "
            "the cap, or run fewer rows (sample, --shard)"
        )
