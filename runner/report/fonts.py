"""Text for the PNG grids, drawn from a chain of TrueType fonts: each character in the first
font of the chain that has a glyph for it, so accents, Cyrillic, Greek and "—" are drawn, and
CJK or emoji wherever the system has a font for them, rather than boxes.

The chain: the system's sans-serif (fontconfig's choice, else known paths), Pillow's own
TrueType default, then fonts found for the characters those lack (fontconfig's charsets, else
known paths). Without FreeType or any font file, Pillow's bitmap font: never an error."""

from __future__ import annotations

import os
import shutil
import subprocess
import unicodedata
from collections.abc import Iterable
from functools import cache
from typing import Any

from PIL import ImageDraw, ImageFont

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

MAX_FONTS = 12  # a label in many scripts loads at most this many fonts per size
_NOT_A_CHARACTER = "\U0010fffd"  # private use, plane 16: no font draws it, so it shows .notdef

SANS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",  # Debian, Ubuntu
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",  # Fedora
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",  # Arch
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial Unicode.ttf",  # macOS
    "/Library/Fonts/Arial Unicode.ttf",
    "C:/Windows/Fonts/segoeui.ttf",
    "C:/Windows/Fonts/arial.ttf",
)
FALLBACKS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/noto/NotoEmoji-Regular.ttf",
    "/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf",
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/Supplemental/Arial Unicode.ttf",
    "C:/Windows/Fonts/msyh.ttc",
    "C:/Windows/Fonts/seguisym.ttf",
)


class Text:
    """Fonts of one size: measures and draws a string, each character in a font that has it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._fonts: list[Font] = []
        for path in _sans_files():
            font = _load(path, size)
            if font is not None:
                self._fonts.append(font)
                break
        try:
            self._fonts.append(ImageFont.load_default(size=size))
        except (TypeError, OSError, ImportError):  # a Pillow without FreeType, or before 10.1
            if not self._fonts:
                self._fonts.append(ImageFont.load_default())
        self._notdef: dict[int, bytes] = {}
        self._pick: dict[str, Font] = {}
        self._tried: set[str] = set()  # font files tried as fallbacks

    @property
    def primary(self) -> Font:
        return self._fonts[0]

    def covers(self, text: str) -> bool:
        """True when every visible character of `text` has a glyph in one of the fonts."""
        return all(self._has(self._font_for(ch), ch) for ch in text if _visible(ch))

    def length(self, text: str) -> float:
        return sum(font.getlength(run) for run, font in self._runs(text))

    def draw(self, pen: ImageDraw.ImageDraw, at: tuple[float, float], text: str, fill: Any) -> None:
        x, y = at
        if not isinstance(self.primary, ImageFont.FreeTypeFont):  # the bitmap font: no anchors
            pen.text((x, y), text, fill=fill, font=self.primary)
            return
        baseline = y + self.primary.getmetrics()[0]  # one baseline whichever font draws a run
        for run, font in self._runs(text):
            pen.text((x, baseline), run, fill=fill, font=font, anchor="ls")
            x += font.getlength(run)

    def _runs(self, text: str) -> list[tuple[str, Font]]:
        runs: list[tuple[str, Font]] = []
        for ch in text:
            # marks, joiners and spaces stay with the character before them
            font = self._font_for(ch) if _visible(ch) and not _attached(ch) else None
            if runs:
                so_far, last = runs[-1]
                if font is None or font is last:
                    runs[-1] = (so_far + ch, last)
                    continue
            runs.append((ch, font or self.primary))
        return runs

    def _font_for(self, ch: str) -> Font:
        if ch not in self._pick:
            found = next((f for f in self._fonts if self._has(f, ch)), None)
            if found is None:
                found = self._fallback(ch)
            self._pick[ch] = found or self.primary
        return self._pick[ch]

    def _fallback(self, ch: str) -> Font | None:
        """A font on the system with a glyph for `ch`, added to the chain."""
        if not isinstance(self.primary, ImageFont.FreeTypeFont) or len(self._fonts) >= MAX_FONTS:
            return None
        for path in _files_for(ord(ch)):
            if path in self._tried:
                continue
            self._tried.add(path)
            font = _load(path, self.size)
            if font is not None and self._has(font, ch):
                self._fonts.append(font)
                return font
        return None

    def _has(self, font: Font, ch: str) -> bool:
        if id(font) not in self._notdef:
            self._notdef[id(font)] = _mask(font, _NOT_A_CHARACTER)
        return _mask(font, ch) != self._notdef[id(font)]


def _visible(ch: str) -> bool:
    return not ch.isspace() and unicodedata.category(ch) not in ("Cc", "Cf")


def _attached(ch: str) -> bool:
    return unicodedata.category(ch) in ("Mn", "Me", "Cf") or ch.isspace()


def _mask(font: Font, ch: str) -> bytes:
    try:
        return bytes(font.getmask(ch))
    except (OSError, ValueError, UnicodeEncodeError):  # the bitmap font: Latin-1 only
        return b""


@cache
def _load(path: str, size: int) -> ImageFont.FreeTypeFont | None:
    try:
        return ImageFont.truetype(path, size)
    except (OSError, ValueError, ImportError):  # a colour-bitmap font, a broken file, no FreeType
        return None


@cache
def _sans_files() -> tuple[str, ...]:
    """The system's sans-serif font files, best first."""
    found: list[str] = []
    if shutil.which("fc-match"):
        found.extend(_run(["fc-match", "--format", "%{file}", "sans-serif"]).splitlines()[:1])
    found.extend(SANS)
    return tuple(dict.fromkeys(p for p in found if os.path.isfile(p)))


def _files_for(codepoint: int) -> Iterable[str]:
    """Font files that may have a glyph for `codepoint`: fontconfig's whose charset holds it
    (regular styles first), then the known paths."""
    fitting = [
        (style, path)
        for path, style, ranges in _charsets()
        if any(lo <= codepoint <= hi for lo, hi in ranges)
    ]
    fitting.sort(key=lambda item: (_styled(item[0]), item[1]))
    yield from dict.fromkeys(path for _, path in fitting)
    yield from (p for p in FALLBACKS if os.path.isfile(p))


def _styled(style: str) -> bool:
    """False for a regular face (preferred), True for bold, italic and the like."""
    words = style.lower()
    return any(w in words for w in ("bold", "italic", "oblique", "light", "condensed", "black"))


@cache
def _charsets() -> tuple[tuple[str, str, tuple[tuple[int, int], ...]], ...]:
    """(file, style, code point ranges) of every font fontconfig knows: one call, read once."""
    if not shutil.which("fc-list"):
        return ()
    found = []
    for line in _run(["fc-list", "--format", "%{file}|%{style}|%{charset}\n"]).splitlines():
        parts = line.rsplit("|", 2)
        if len(parts) != 3 or not os.path.isfile(parts[0]):
            continue
        ranges = []
        for item in parts[2].split():
            lo, _, hi = item.partition("-")
            try:
                ranges.append((int(lo, 16), int(hi or lo, 16)))
            except ValueError:
                continue
        found.append((parts[0], parts[1], tuple(ranges)))
    return tuple(found)


def _run(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout if done.returncode == 0 else ""
