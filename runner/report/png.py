"""`runner report OUT --png`: each table of the report as one labelled PNG grid, the axis
values along the top and the left edge and the axis names in the corner (as AUTOMATIC1111's
X/Y/Z plot draws them), for pasting into a chat. Pillow only; reads images from OUT. Every
output image of a request is drawn; one missing or changed since the run is a marked box,
and a request whose local input changed or went missing is marked on its tiles."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from ..errors import ManifestError
from ..folder.integrity import CHANGED, OutputState
from ..folder.journal import FAILED, OK, Record
from .files import Files, input_title
from .fonts import Text
from .layout import Layout, Table, group, value_of, values
from .page import problem_word, text

TILE = 256  # px, the longest side of one image in a cell
MIN_TILE = 128
MAX_SIDE = 12_000  # px: a grid wider or taller gets smaller tiles (down to MIN_TILE)
SLOTS = 4  # images side by side in one cell before wrapping
PAD = 6
LABEL_LINES = 3
BG, INK, GREY, LINE = (255, 255, 255), (20, 20, 20), (110, 110, 110), (200, 200, 200)
HEAD_BG = (240, 240, 240)
FAILED_BG, FAILED_INK, PENDING_BG = (253, 228, 228), (163, 29, 29), (236, 236, 236)

# one image of a cell: a record and one of its outputs (None: a failed or pending record, or
# an ok one without outputs)
Tile = tuple[Record, OutputState | None]


def write_pngs(dest: Path, files: Files, layout: Layout, title: str) -> list[Path]:
    """One PNG per table: DEST/report.png, or DEST/report-001.png, … (older ones removed)."""
    try:
        for old in [*dest.glob("report-[0-9][0-9][0-9].png"), dest / "report.png"]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        raise ManifestError(f"cannot write {dest}: {exc.strerror or exc}") from None
    many = len(layout.tables) > 1
    written: list[Path] = []
    every = [r for t in layout.tables for r in t.records]
    fonts = _Fonts()
    for number, table in enumerate(layout.tables, 1):
        path = dest / (f"report-{number:03d}.png" if many else "report.png")
        image = _Grid(files, layout, table, every, title, fonts).draw()
        try:
            image.save(path, "PNG", optimize=False)
        except OSError as exc:
            raise ManifestError(f"cannot write {path}: {exc.strerror or exc}") from None
        written.append(path)
    return written


def _sizes(record: Record) -> list[int]:
    if record.get("status") != OK:
        return []
    found = record.get("outputs") or []
    return [
        max(o["width"], o.get("height") or 0)
        for o in found
        if isinstance(o, dict) and isinstance(o.get("width"), int)
    ]


class _Fonts:
    def __init__(self) -> None:
        self.font, self.small, self.big, self.bold = Text(15), Text(12), Text(20), Text(16)


class _Grid:
    def __init__(
        self,
        files: Files,
        layout: Layout,
        table: Table,
        every: list[Record],
        title: str,
        fonts: _Fonts,
    ) -> None:
        self.files, self.layout, self.table, self.title = files, layout, table, title
        rows, cols = layout.rows, layout.columns
        self.row_values = values(every, rows) if rows else {"": None}
        self.col_values = values(every, cols) if cols else {"": None}
        axes = [a for a in (rows, cols) if a]
        by_cell = group(table.records, axes)
        self.cells: dict[tuple[str, str], list[Tile]] = {}
        for key, records in by_cell.items():
            r = key[0] if rows else ""
            c = key[-1] if cols else ""
            self.cells[(r, c)] = [tile for record in records for tile in self._tiles(record)]
        # a page's rows with nothing in them are left out, as in the HTML table
        self.row_values = {
            k: v
            for k, v in self.row_values.items()
            if any((k, c) in self.cells for c in self.col_values)
        } or self.row_values
        most = max((len(rs) for rs in self.cells.values()), default=1)
        self.slots = min(SLOTS if cols else 6, max(1, most))
        # tiles as large as the largest image, within MIN_TILE..TILE: small images grow
        sides = [side for r in every for side in _sizes(r)]
        self.tile = max(MIN_TILE, min(TILE, max(sides, default=TILE)))
        self.font, self.small, self.big = fonts.font, fonts.small, fonts.big
        self.bold = fonts.bold
        self.warnings = self._warnings()

    def _tiles(self, record: Record) -> list[Tile]:
        outputs = self.files.of(record).outputs if record.get("status") == OK else ()
        return [(record, o) for o in outputs] or [(record, None)]

    def draw(self) -> Image.Image:
        for _ in range(4):  # shrink the tiles until the grid fits MAX_SIDE
            width, height = self._size()
            if max(width, height) <= MAX_SIDE or self.tile <= MIN_TILE:
                break
            self.tile = max(MIN_TILE, int(self.tile * MAX_SIDE / max(width, height)))
        width, height = self._size()
        canvas = Image.new("RGB", (width, height), BG)
        pen = ImageDraw.Draw(canvas)
        y = PAD
        for line in self._title_lines():
            self.big.draw(pen, (PAD, y), line, INK)
            y += 26
        for line in self.warnings:
            self._wrapped(pen, (PAD, y), line, width - 2 * PAD, self.font, FAILED_INK, 1)
            y += 20
        top, left = self._title_height(), self._left_width()
        header = self._header_height()
        right = left + len(self.col_values) * self._col_width()
        bottom = top + header + sum(self._row_height(k) for k in self.row_values)
        # the header band and the left band, then the axis names in their corner
        if self.layout.columns:
            pen.rectangle([PAD, top, right, top + header], fill=HEAD_BG, outline=LINE)
        if self.layout.rows:
            pen.rectangle([PAD, top, left, bottom], fill=HEAD_BG, outline=LINE)
            corner = f"y: {self.layout.rows}"
            self._wrapped(
                pen, (PAD * 2, top + header - 22), corner, left - 3 * PAD, self.font, GREY, 1
            )
        if self.layout.columns:
            corner = f"x: {self.layout.columns}"
            room = (left if self.layout.rows else right) - 3 * PAD
            self._wrapped(pen, (PAD * 2, top + PAD), corner, room, self.font, GREY, 1)
        x = left
        for cv in self.col_values.values():
            w = self._col_width()
            if self.layout.columns:
                label_top = top + PAD + (22 if not self.layout.rows else 0)
                self._wrapped(pen, (x + PAD, label_top), text(cv), w - 2 * PAD, self.bold, INK)
            x += w
        y = top + header
        for rk, rv in self.row_values.items():
            h = self._row_height(rk)
            if self.layout.rows:
                self._wrapped(pen, (PAD * 2, y + PAD), text(rv), left - 3 * PAD, self.bold, INK)
            x = left
            for ck in self.col_values:
                pen.rectangle([x, y, x + self._col_width(), y + h], outline=LINE)
                self._cell(canvas, pen, (x, y), self.cells.get((rk, ck), []))
                x += self._col_width()
            y += h
        return canvas

    # sizes
    def _title_lines(self) -> list[str]:
        lines = [self.title]
        if self.table.title:
            lines.append("  ·  ".join(f"{k} {text(v)}" for k, v in self.table.title.items()))
        return lines

    def _warnings(self) -> list[str]:
        """The table's local inputs that are not what its requests sent."""
        found: dict[str, None] = {}
        for record in self.table.records:
            for check in self.files.of(record).input_problems():
                found[f"input {input_title(check)} {problem_word(check)}"] = None
        lines = list(found)
        if len(lines) > 3:  # each tile is marked too
            lines[2:] = [f"and {len(lines) - 2} more inputs missing or changed"]
        return lines

    def _title_height(self) -> int:
        return PAD + 26 * len(self._title_lines()) + 20 * len(self.warnings) + PAD

    def _left_width(self) -> int:
        return 200 if self.layout.rows else PAD

    def _header_height(self) -> int:
        return PAD + 20 * LABEL_LINES + PAD if self.layout.columns else PAD

    def _col_width(self) -> int:
        return max(self.slots * (self.tile + PAD) + PAD, 150)

    def _caption_height(self) -> int:
        return 30 if self.layout.captions else 0

    def _lines_in(self, row_key: str) -> int:
        most = max((len(self.cells.get((row_key, c), [])) for c in self.col_values), default=1)
        return max(1, math.ceil(most / self.slots))

    def _row_height(self, row_key: str) -> int:
        return self._lines_in(row_key) * (self.tile + self._caption_height() + PAD) + PAD

    def _size(self) -> tuple[int, int]:
        width = self._left_width() + len(self.col_values) * self._col_width() + PAD
        height = self._title_height() + self._header_height()
        height += sum(self._row_height(k) for k in self.row_values) + PAD
        return width, height

    # drawing
    def _cell(
        self,
        canvas: Image.Image,
        pen: ImageDraw.ImageDraw,
        at: tuple[int, int],
        tiles: list[Tile],
    ) -> None:
        x0, y0 = at
        x0 += (self._col_width() - (self.slots * (self.tile + PAD) + PAD)) // 2
        step_y = self.tile + self._caption_height() + PAD
        for i, (record, output) in enumerate(tiles):
            x = x0 + PAD + (i % self.slots) * (self.tile + PAD)
            y = y0 + PAD + (i // self.slots) * step_y
            self._tile(canvas, pen, (x, y), record, output)
            problems = self.files.of(record).input_problems()
            if problems:  # a band over the tile's foot: its input is not what was sent
                band = "input changed" if problems[0].state == CHANGED else "input missing"
                pen.rectangle(
                    [x, y + self.tile - 20, x + self.tile - 1, y + self.tile - 1], fill=FAILED_BG
                )
                self._wrapped(
                    pen, (x + 4, y + self.tile - 18), band, self.tile - 8, self.small, FAILED_INK, 1
                )
            if self.layout.captions:
                shown = " · ".join(f"{a} {text(value_of(record, a))}" for a in self.layout.captions)
                self._wrapped(pen, (x, y + self.tile + 2), shown, self.tile, self.small, GREY, 2)

    def _tile(
        self,
        canvas: Image.Image,
        pen: ImageDraw.ImageDraw,
        at: tuple[int, int],
        record: Record,
        output: OutputState | None,
    ) -> None:
        x, y = at
        t = self.tile
        status = record.get("status")
        if status == OK:
            thumb = self._thumb(output) if output is not None else None
            if thumb is not None:
                canvas.paste(thumb, (x + (t - thumb.width) // 2, y + (t - thumb.height) // 2))
                return
            if output is None:
                message = "no images"
            elif output.intact:
                message = f"unreadable image\n{output.file}"
            else:
                message = f"output {problem_word(output)}\n{output.file}"
            self._box(pen, (x, y), FAILED_BG if output else PENDING_BG, message, FAILED_INK)
        elif status == FAILED:
            error: Mapping[str, Any] = record.get("error") or {}
            message = f"failed: {error.get('type', 'error')}\n{error.get('message', '')}"
            self._box(pen, (x, y), FAILED_BG, message, FAILED_INK)
        else:
            self._box(pen, (x, y), PENDING_BG, "pending", GREY)

    def _box(
        self, pen: ImageDraw.ImageDraw, at: tuple[int, int], fill: Any, message: str, ink: Any
    ) -> None:
        x, y = at
        pen.rectangle([x, y, x + self.tile - 1, y + self.tile - 1], fill=fill)
        self._wrapped(pen, (x + PAD, y + PAD), message, self.tile - 2 * PAD, self.small, ink, 8)

    def _thumb(self, output: OutputState) -> Image.Image | None:
        if not output.intact or output.path is None:
            return None  # missing or changed since the run: not what the model returned
        try:
            with Image.open(output.path) as img:
                scale = self.tile / max(img.width, img.height, 1)
                size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
                return img.convert("RGB").resize(size, Image.Resampling.LANCZOS)
        except (OSError, ValueError, Image.DecompressionBombError):
            return None

    def _wrapped(
        self,
        pen: ImageDraw.ImageDraw,
        at: tuple[int, int],
        content: str,
        width: int,
        font: Text,
        ink: Any,
        max_lines: int = LABEL_LINES,
    ) -> None:
        x, y = at
        for line in _wrap(content, width, font, max_lines):
            font.draw(pen, (x, y), line, ink)
            y += font.size + 3


def _wrap(content: str, width: int, font: Text, max_lines: int) -> Sequence[str]:
    """Greedy word wrap to `width` px; the last line ends in … when text is left over."""
    lines: list[str] = []
    for paragraph in content.splitlines() or [""]:
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if font.length(candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            while font.length(word) > width and len(word) > 1:  # a very long word: cut it
                cut = len(word)
                while cut > 1 and font.length(word[:cut]) > width:
                    cut -= 1
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and font.length(last + "…") > width:
            last = last[:-1]
        lines = [*lines[: max_lines - 1], last + "…"]
    return lines
