"""The report page: one self-contained HTML file (inline CSS, no script, no network) with the
images laid out as a Layout says. Images are linked by relative path, so the folder can be
zipped or served as it is. Clicking an image (or a failed cell) opens its full-size view with
every input, as a CSS :target overlay, so it works from file://."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from ..manifest import FAILED, OK, Record
from .layout import Layout, Table, group, values, vars_of

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

    def __init__(self, out_dir: Path, layout: Layout) -> None:
        self.out = out_dir
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
            + (
                f"<figcaption>{named({axis: vars_of(rs[0]).get(axis)})}</figcaption>"
                if axis
                else ""
            )
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
            shown = {a: vars_of(record).get(a) for a in self.layout.captions}
            caption = f'<div class="cap">{named(shown)}</div>'
        self._overlays.append(self._overlay(record))
        anchor = f'id="t-{html.escape(key)}"'
        if status == OK:
            outputs = [o for o in record.get("outputs") or [] if isinstance(o, dict)]
            images = "".join(self._thumb(o, key, target) for o in outputs)
            images = f'<div class="imgs">{images or "no images"}</div>'
            return f'<div class="rec" {anchor}>{images}{caption}</div>'
        if status == FAILED:
            error: Mapping[str, Any] = record.get("error") or {}
            kind = html.escape(str(error.get("type", "error")))
            message = label(str(error.get("message", "")), MESSAGE_CHARS)
            return (
                f'<a class="box rec failed" {anchor} href="{target}"><b>{kind}</b>{message}'
                f"{caption}</a>"
            )
        return f'<a class="box rec pending" {anchor} href="{target}">pending{caption}</a>'

    def _thumb(self, output: Mapping[str, Any], key: str, target: str) -> str:
        url = self._url(output)
        if url is None:
            return (
                f'<span class="missing">missing {html.escape(str(output.get("file") or ""))}</span>'
            )
        width, height = output.get("width"), output.get("height")
        if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
            scale = min(1.0, THUMB / max(width, height))
            thumb = f"width:{round(width * scale)}px;height:{round(height * scale)}px"
            size = f' width="{width}" height="{height}" style="{thumb}"'
        else:
            size = f' style="max-width:{THUMB}px;max-height:{THUMB}px"'
        alt = html.escape(key)
        return (
            f'<a href="{target}"><img class="t" src="{url}"{size} loading="lazy" alt="{alt}" '
            f'title="{alt}: click for the full size and every input"></a>'
        )

    def _url(self, output: Mapping[str, Any]) -> str | None:
        rel = str(output.get("file") or "")
        # data from the journal: link only a plain relative path inside OUT (no scheme, no '..')
        safe = rel and not rel.startswith("/") and ":" not in rel and "\\" not in rel
        if not safe or ".." in PurePosixPath(rel).parts or not (self.out / rel).is_file():
            return None
        return html.escape(quote(rel))

    def _overlay(self, record: Record) -> str:
        """The full-size view of one record: its images, its input image, every fact."""
        key = str(record.get("key", ""))
        figures = []
        for output in record.get("outputs") or [] if record.get("status") == OK else []:
            url = self._url(output) if isinstance(output, dict) else None
            if url:
                figures.append(
                    f'<figure><a href="{url}"><img src="{url}" loading="lazy" alt="output"></a>'
                    "<figcaption>output (click for the file)</figcaption></figure>"
                )
        source = self._input_url(record)
        if source:
            figures.append(
                f'<figure><img src="{source}" loading="lazy" alt="input">'
                "<figcaption>input</figcaption></figure>"
            )
        facts: dict[str, Any] = {"key": key, "status": record.get("status")}
        error = record.get("error")
        if error:
            facts["error"] = f"{error.get('type')}: {error.get('message')}"
        for name, value in (record.get("input") or {}).items():
            facts[f"input.{name}"] = value
        for name, value in (record.get("input_files") or {}).items():
            facts[f"file.{name}"] = value
        for name, value in vars_of(record).items():
            facts[f"vars.{name}"] = value
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

    def _input_url(self, record: Record) -> str | None:
        """A relative link to the local input file the journal recorded, if it is there."""
        body = record.get("input") or {}
        for name, path in (record.get("input_files") or {}).items():
            if not isinstance(path, str) or not str(body.get(name, "")).startswith("sha256:"):
                continue
            if os.path.isfile(path):
                rel = os.path.relpath(path, self.out).replace(os.sep, "/")
                return html.escape(quote(rel))
        return None


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
