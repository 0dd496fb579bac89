"""The report page: one self-contained HTML file (inline CSS, no script, no network) with the
images laid out as a Layout says. Images are linked by relative path (outputs in the run
folder, inputs copied beside the page), so the folder can be zipped or served as it is.
Clicking an image (or a failed cell) opens its full-size view with every input, as a CSS
:target overlay, so it works from file://. A file missing or changed since the run is said
so, never shown as what was sent or returned."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..folder.integrity import CHANGED, INTACT, REMOTE, InputState, OutputState
from ..folder.journal import FAILED, OK, Record
from .files import Files, input_title
from .layout import Layout, Table, group, value_of, values, vars_of

THUMB = 256  # px, longest side of a displayed image
LABEL_CHARS = 60
MESSAGE_CHARS = 160
TITLE_CHARS = 2000  # a data: URI in a title attribute would bloat the page
VALUE_CHARS = 4000  # a value shown in full in the overlay (data: URIs are cut)

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:28px 0 8px;font-weight:600}
.meta{color:#666;margin:2px 0}code{font:12px ui-monospace,monospace}
.n{display:inline-block;padding:1px 9px;border-radius:10px;margin:6px 6px 6px 0;font-weight:600}
.ok{background:#e3f4e6;color:#1b6b2c}.failed{background:#fde4e4;color:#a31d1d}
.pending{background:#eee;color:#666}table{border-collapse:collapse}
.fixed td{padding:1px 14px 1px 0;vertical-align:top}.fixed td:first-child{color:#666}
.fixed caption{text-align:left;color:#666;font-weight:600}
.grid th,.grid td{border:1px solid #ddd;padding:4px;vertical-align:middle;text-align:center}
.grid th{background:#f0f0f0;font-weight:600}.grid thead th{position:sticky;top:0;z-index:1}
.grid tbody th{position:sticky;left:0}.grid .corner{color:#666;font-weight:400;left:0;z-index:2}
.grid .corner{white-space:nowrap;text-align:right}
.grid td{background:#fff}.ax{color:#666;font-weight:400}
.recs{display:flex;gap:6px;justify-content:center;align-items:flex-start;flex-wrap:wrap}
.rec{display:flex;flex-direction:column;align-items:center}
.imgs{display:flex;gap:4px}img{display:block;height:auto}
a.box{color:inherit;text-decoration:none}a.box:hover{outline:2px solid #4a7bd0}
.rec.failed,.rec.pending{padding:8px;min-width:120px;max-width:240px;border-radius:4px}
.rec.failed{text-align:left;font-size:12px;align-items:stretch}.rec.failed b{display:block}
.cap{font-size:11px;color:#555;max-width:256px;margin-top:2px;word-break:break-word}
.strip{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
figure{margin:0;background:#fff;border:1px solid #ddd;padding:4px}
figcaption{font-size:12px;color:#444;text-align:center;margin-top:4px}
.missing{color:#a31d1d;font-size:12px}main{margin-top:18px}
.warn{color:#a31d1d;font-size:12px;margin:2px 0}p.warn{font-size:13px}
.gone{max-width:320px;padding:10px;background:#fde4e4;color:#a31d1d;font-size:13px}
.lb{display:none}.lb:target{display:block;position:fixed;inset:0;z-index:10;overflow:auto}
.lb .bg{position:fixed;inset:0;background:rgba(16,16,16,.86)}
.lb .panel{position:relative;margin:28px auto;max-width:min(1280px,94vw);background:#fff;
padding:14px 18px;border-radius:6px;box-shadow:0 4px 24px #0008}
.lb .close{position:absolute;top:4px;right:12px;font-size:26px;line-height:1;color:#444;
text-decoration:none}
.lb .full{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
.lb .full figure{border:0;padding:0}
.lb .full img{max-width:100%;max-height:80vh;min-width:min(320px,100%)}
.lb .facts{margin-top:10px}.lb .facts td{padding:2px 14px 2px 0;vertical-align:top}
.lb .facts td:first-child{color:#666;white-space:nowrap}
.lb .facts td:last-child{font:12px ui-monospace,monospace;word-break:break-all}
"""


class Page:
    """Builds the page; collects one overlay per record shown."""

    def __init__(self, files: Files, layout: Layout) -> None:
        self.files = files
        self.layout = layout
        self._overlays: list[str] = []
        every = [r for t in layout.tables for r in t.records]
        self._row_values = values(every, layout.rows)
        self._col_values = values(every, layout.columns)

    def body(self, records: Sequence[Record]) -> str:
        layout = self.layout
        if not records:
            return "<p>No requests in the manifest yet.</p>"
        if layout.rows is None:
            return self._strip(records, layout.columns)
        return "".join(self._table(t) for t in layout.tables)

    def overlays(self) -> str:
        return "".join(self._overlays)

    def _table(self, table: Table) -> str:
        rows, cols = self.layout.rows, self.layout.columns
        assert rows is not None and cols is not None
        row_values, col_values = self._row_values, self._col_values
        cells = group(table.records, [rows, cols])
        corner = f'<th class="corner">{html.escape(cols)} →<br>{html.escape(rows)} ↓</th>'
        head = "<thead><tr>" + corner
        head += "".join(f"<th>{label(v)}</th>" for v in col_values.values())
        body = "".join(
            f"<tr><th>{label(rv)}</th>"
            + "".join(f"<td>{self._cell(cells.get((rk, ck), []))}</td>" for ck in col_values)
            + "</tr>"
            for rk, rv in row_values.items()
            if any((rk, ck) in cells for ck in col_values)  # a page's empty rows are left out
        )
        title = f"<h2>{named(table.title)}</h2>" if table.title else ""
        return f'{title}<table class="grid">{head}</tr></thead><tbody>{body}</tbody></table>'

    def _strip(self, records: Sequence[Record], axis: str | None) -> str:
        """A wrapping row of figures, one per value of `axis` (or one per record)."""
        groups = [[r] for r in records]
        if axis:
            by_value = group(records, [axis])
            groups = [by_value[(k,)] for k in values(records, axis)]
        figures = "".join(
            f"<figure>{self._cell(rs)}"
            + (f"<figcaption>{named({axis: value_of(rs[0], axis)})}</figcaption>" if axis else "")
            + "</figure>"
            for rs in groups
        )
        return f'<div class="strip">{figures}</div>'

    def _cell(self, records: Sequence[Record]) -> str:
        if not records:
            return '<span class="ax">—</span>'
        return '<div class="recs">' + "".join(self._record(r) for r in records) + "</div>"

    def _record(self, record: Record) -> str:
        key = str(record.get("key", ""))
        status = record.get("status")
        target = html.escape(f"#v-{key}")
        caption = ""
        if self.layout.captions:
            shown = {a: value_of(record, a) for a in self.layout.captions}
            caption = f'<div class="cap">{named(shown)}</div>'
        checked = self.files.of(record)
        warning = "".join(
            f'<div class="warn">input {html.escape(problem_word(c))}</div>'
            for c in checked.input_problems()
        )
        self._overlays.append(self._overlay(record))
        anchor = f'id="t-{html.escape(key)}"'
        if status == OK:
            outputs = [o for o in record.get("outputs") or [] if isinstance(o, dict)]
            images = "".join(
                self._thumb(o, c, key, target)
                for o, c in zip(outputs, checked.outputs, strict=True)
            )
            images = f'<div class="imgs">{images or "no images"}</div>'
            return f'<div class="rec" {anchor}>{images}{warning}{caption}</div>'
        if status == FAILED:
            error: Mapping[str, Any] = record.get("error") or {}
            kind = html.escape(str(error.get("type", "error")))
            message = label(str(error.get("message", "")), MESSAGE_CHARS)
            return (
                f'<a class="box rec failed" {anchor} href="{target}"><b>{kind}</b>{message}'
                f"{warning}{caption}</a>"
            )
        return f'<a class="box rec pending" {anchor} href="{target}">pending{warning}{caption}</a>'

    def _thumb(self, output: Mapping[str, Any], check: OutputState, key: str, target: str) -> str:
        url = self.files.output_link(check)
        if url is None:
            return f'<a class="missing" href="{target}">{gone(check)}</a>'
        width, height = output.get("width"), output.get("height")
        if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
            scale = min(1.0, THUMB / max(width, height))
            thumb = f"width:{round(width * scale)}px;height:{round(height * scale)}px"
            size = f' width="{width}" height="{height}" style="{thumb}"'
        else:
            size = f' style="max-width:{THUMB}px;max-height:{THUMB}px"'
        alt = html.escape(key)
        return (
            f'<a href="{target}"><img class="t" src="{html.escape(url)}"{size} loading="lazy" '
            f'alt="{alt}" title="{alt}: click for the full size and every input"></a>'
        )

    def _overlay(self, record: Record) -> str:
        """The full-size view of one record: its images, its input images, every fact."""
        key = str(record.get("key", ""))
        checked = self.files.of(record)
        figures = []
        for output in checked.outputs:
            url = self.files.output_link(output)
            if url:
                url = html.escape(url)
                figures.append(
                    f'<figure><a href="{url}"><img src="{url}" loading="lazy" alt="output"></a>'
                    "<figcaption>output (click for the file)</figcaption></figure>"
                )
            else:
                figures.append(f'<figure class="gone">output {gone(output)}</figure>')
        for name, check in checked.inputs:
            figures.append(self._input_figure(name, check))
        facts: dict[str, Any] = {"key": key, "status": record.get("status")}
        error = record.get("error")
        if error:
            facts["error"] = f"{error.get('type')}: {error.get('message')}"
        for name, value in (record.get("input") or {}).items():
            facts[f"input.{name}"] = value
        for name, value in (record.get("input_files") or {}).items():
            facts[f"file.{name}"] = value
        body = record.get("input") or {}
        for name, value in vars_of(record).items():
            # a field's template, as the spec wrote it: its input row above is what was sent
            written = name in body and value != value_of(record, name)
            facts[f"vars.{name} (as written)" if written else f"vars.{name}"] = value
        for name in ("request_id", "attempts", "submitted_at", "time", "run_id", "backend"):
            if record.get(name) is not None:
                facts[name] = record.get(name)
        result = record.get("result")
        if isinstance(result, dict) and result.get("seed") is not None:
            facts["result.seed"] = result["seed"]
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(full_text(v))}</td></tr>"
            for k, v in facts.items()
        )
        back = html.escape(f"#t-{key}")
        return (
            f'<section class="lb" id="v-{html.escape(key)}"><a class="bg" href="{back}" '
            f'aria-label="close"></a><div class="panel"><a class="close" href="{back}" '
            f'title="close">×</a><div class="full">{"".join(figures)}</div>'
            f'<table class="facts">{rows}</table></div></section>'
        )

    def _input_figure(self, name: str, check: InputState) -> str:
        caption = f"input {html.escape(name)}: {input_name(check, self.files)}"
        url = self.files.input_link(check)
        if url:
            url = html.escape(url)
            return (
                f'<figure><a href="{url}"><img src="{url}" loading="lazy" alt="input"></a>'
                f"<figcaption>{caption}</figcaption></figure>"
            )
        if check.state == REMOTE:
            return f'<figure class="gone">{caption} (a URL the server fetched)</figure>'
        return f'<figure class="gone">{caption}: not shown</figure>'


def gone(check: OutputState) -> str:
    """An output that is not shown, and why; escaped HTML."""
    return html.escape(f"{problem_word(check)}{':' if check.state == CHANGED else ''} {check.file}")


def problem_word(check: InputState | OutputState) -> str:
    return "changed since the run" if check.state == CHANGED else "missing"


def input_name(check: InputState, files: Files) -> str:
    """An input image by its file (as recorded), linked to the copy the report keeps, with what
    became of it since the run; escaped HTML."""
    if check.state == REMOTE:
        return label(check.source or "", LABEL_CHARS)
    name = label(input_title(check), LABEL_CHARS)
    url = files.input_link(check)
    if url:
        return f'<a href="{html.escape(url)}">{name}</a>'
    if check.state == INTACT:
        return name
    sent = f" (the request sent sha256 {html.escape((check.digest or '')[:12])}…)"
    return f'{name} <span class="warn">{html.escape(problem_word(check))}{sent}</span>'


def full_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"


def text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        if value.startswith("sha256:") and len(value) > 19:
            return value[:19] + "…"  # a local file, by content
        return value
    if isinstance(value, Mapping):  # an object axis: its fields, paired
        return ", ".join(f"{k}={text(v)}" for k, v in value.items())
    if isinstance(value, bool | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def label(value: Any, limit: int = LABEL_CHARS) -> str:
    """Escaped display text, shortened with the full text as a tooltip."""
    full = value if isinstance(value, str) else text(value)
    short = text(value)
    if len(short) > limit:
        short = short[: limit - 1] + "…"
    if short == full:
        return html.escape(short)
    return f'<span title="{html.escape(full[:TITLE_CHARS])}">{html.escape(short)}</span>'


def named(pairs: Mapping[str, Any]) -> str:
    return " · ".join(
        f'<span class="ax">{html.escape(k)}</span> {label(v)}' for k, v in pairs.items()
    )
