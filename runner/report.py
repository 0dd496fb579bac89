"""The run report: reads OUT/manifest.jsonl (and runs.jsonl), writes OUT/report.html, one
self-contained page (inline CSS, no script, no network) with the images laid out by the swept
axes. Images are linked by relative path, so the folder can be zipped or served as it is.

Layout: no swept axis, a gallery; one, a single labelled row; two, a table (first axis down,
second across, values in run order); more, one such table per combination of the rest.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from .errors import ManifestError
from .manifest import FAILED, MANIFEST, OK, Record, RunLine, latest, read_runs

REPORT = "report.html"
THUMB = 256  # px, longest side of a displayed image
LABEL_CHARS = 60
MESSAGE_CHARS = 160
TITLE_CHARS = 2000  # a data: URI in a title attribute would bloat the page

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
.recs{display:flex;gap:6px;justify-content:center;align-items:center;flex-wrap:wrap}
.imgs{display:flex;gap:4px}img{display:block;height:auto}
.rec.failed,.rec.pending{padding:8px;min-width:120px;max-width:240px;border-radius:4px}
.rec.failed{text-align:left;font-size:12px}.rec.failed b{display:block}
.strip{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
figure{margin:0;background:#fff;border:1px solid #ddd;padding:4px}
figcaption{font-size:12px;color:#444;text-align:center;margin-top:4px}
.missing{color:#a31d1d;font-size:12px}main{margin-top:18px}
"""


@dataclass(frozen=True)
class ReportSummary:
    path: Path
    ok: int
    failed: int
    pending: int  # submitting or submitted: the run stopped before their result
    rows: str | None = None  # the axis down each table
    columns: str | None = None  # the axis across (the only axis of a one-row report)
    pages: tuple[str, ...] = ()  # one table per combination of these


def write_report(out_dir: Path) -> ReportSummary:
    """Write OUT/report.html from the journal's latest state; returns what it holds."""
    if not (out_dir / MANIFEST).is_file():
        raise ManifestError(f"no {MANIFEST} in {out_dir}: run `runner run SPEC` first")
    records = list(latest(out_dir).values())
    axes = swept_axes(records)
    statuses = [r.get("status") for r in records]
    ok, failed = statuses.count(OK), statuses.count(FAILED)
    rows, cols = (axes[0], axes[1]) if len(axes) > 1 else (None, axes[0] if axes else None)
    pending = len(records) - ok - failed
    summary = ReportSummary(out_dir / REPORT, ok, failed, pending, rows, cols, tuple(axes[2:]))
    page = _page(out_dir, records, axes, summary)
    tmp = summary.path.with_name(REPORT + ".tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, summary.path)
    except OSError as exc:
        raise ManifestError(f"cannot write {summary.path}: {exc.strerror or exc}") from None
    return summary


def swept_axes(records: Sequence[Record]) -> list[str]:
    """The `vars` names whose value differs across records, in first-seen (spec) order."""
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(_vars(record)))
    return [n for n in names if len({_canon(_vars(r).get(n)) for r in records}) > 1]


def _vars(record: Record) -> dict[str, Any]:
    found = record.get("vars")
    return found if isinstance(found, dict) else {}


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _group(records: Iterable[Record], axes: Sequence[str]) -> dict[tuple[str, ...], list[Record]]:
    """Records by their (canonical) values on `axes`, in run order."""
    groups: dict[tuple[str, ...], list[Record]] = {}
    for record in records:
        groups.setdefault(tuple(_canon(_vars(record).get(a)) for a in axes), []).append(record)
    return groups


def _values(records: Iterable[Record], axis: str) -> dict[str, Any]:
    """canonical form -> value: numbers ascending, anything else in first-seen order (the run
    order, give or take the shuffling of concurrent workers)."""
    found: dict[str, Any] = {}
    for record in records:
        value = _vars(record).get(axis)
        found.setdefault(_canon(value), value)
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in found.values()):
        return dict(sorted(found.items(), key=lambda item: item[1]))
    return found


def _text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        if value.startswith("sha256:") and len(value) > 19:
            return value[:19] + "…"  # a local file, by content
        return value
    if isinstance(value, Mapping):  # an object axis: its fields, paired
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items())
    if isinstance(value, bool | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _label(value: Any, limit: int = LABEL_CHARS) -> str:
    """Escaped display text, shortened with the full text as a tooltip."""
    full = value if isinstance(value, str) else _text(value)
    short = _text(value)
    if len(short) > limit:
        short = short[: limit - 1] + "…"
    if short == full:
        return html.escape(short)
    return f'<span title="{html.escape(full[:TITLE_CHARS])}">{html.escape(short)}</span>'


def _named(values: Mapping[str, Any]) -> str:
    return " · ".join(
        f'<span class="ax">{html.escape(k)}</span> {_label(v)}' for k, v in values.items()
    )


def _image(out_dir: Path, output: Mapping[str, Any], key: str) -> str:
    rel = str(output.get("file") or "")
    # data from the journal: link only a plain relative path inside OUT (no scheme, no '..')
    safe = rel and not rel.startswith("/") and ":" not in rel and "\\" not in rel
    if not safe or ".." in PurePosixPath(rel).parts or not (out_dir / rel).is_file():
        return f'<span class="missing">missing {html.escape(rel)}</span>'
    url = html.escape(quote(rel))
    width, height = output.get("width"), output.get("height")
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
        scale = min(1.0, THUMB / max(width, height))
        thumb = f"width:{round(width * scale)}px;height:{round(height * scale)}px"
        size = f' width="{width}" height="{height}" style="{thumb}"'
    else:
        size = f' style="max-width:{THUMB}px;max-height:{THUMB}px"'
    alt = html.escape(key)
    return f'<a href="{url}"><img src="{url}"{size} loading="lazy" alt="{alt}" title="{alt}"></a>'


def _record(out_dir: Path, record: Record) -> str:
    status = record.get("status")
    if status == OK:
        outputs = record.get("outputs") or []
        images = "".join(_image(out_dir, o, record["key"]) for o in outputs if isinstance(o, dict))
        return f'<div class="imgs">{images or "no images"}</div>'
    if status == FAILED:
        error: Mapping[str, Any] = record.get("error") or {}
        kind = html.escape(str(error.get("type", "error")))
        message = _label(str(error.get("message", "")), MESSAGE_CHARS)
        return f'<div class="rec failed"><b>{kind}</b>{message}</div>'
    return '<div class="rec pending">pending</div>'


def _cell(out_dir: Path, records: Sequence[Record]) -> str:
    if not records:
        return '<span class="ax">—</span>'
    return '<div class="recs">' + "".join(_record(out_dir, r) for r in records) + "</div>"


def _strip(out_dir: Path, records: Sequence[Record], axis: str | None) -> str:
    """A wrapping row of figures, one per value of `axis` (or one per record)."""
    groups = [[r] for r in records]
    if axis:
        by_value = _group(records, [axis])
        groups = [by_value[(k,)] for k in _values(records, axis)]
    figures = "".join(
        f"<figure>{_cell(out_dir, rs)}"
        + (f"<figcaption>{_named({axis: _vars(rs[0]).get(axis)})}</figcaption>" if axis else "")
        + "</figure>"
        for rs in groups
    )
    return f'<div class="strip">{figures}</div>'


def _table(out_dir: Path, records: Sequence[Record], rows: str, cols: str) -> str:
    row_values, col_values = _values(records, rows), _values(records, cols)
    cells = _group(records, [rows, cols])
    corner = f'<th class="corner">{html.escape(cols)} →<br>{html.escape(rows)} ↓</th>'
    head = "<thead><tr>" + corner + "".join(f"<th>{_label(v)}</th>" for v in col_values.values())
    body = "".join(
        f"<tr><th>{_label(rv)}</th>"
        + "".join(f"<td>{_cell(out_dir, cells.get((rk, ck), []))}</td>" for ck in col_values)
        + "</tr>"
        for rk, rv in row_values.items()
    )
    return f'<table class="grid">{head}</tr></thead><tbody>{body}</tbody></table>'


def _pages(out_dir: Path, records: Sequence[Record], axes: Sequence[str]) -> str:
    """Small multiples: one rows x columns table per combination of the remaining axes."""
    orders = [list(_values(records, a)) for a in axes[2:]]
    pages = _group(records, axes[2:])
    ranked = sorted(pages, key=lambda key: [o.index(k) for o, k in zip(orders, key, strict=True)])
    return "".join(
        f"<h2>{_named({a: _vars(pages[key][0]).get(a) for a in axes[2:]})}</h2>"
        + _table(out_dir, pages[key], axes[0], axes[1])
        for key in ranked
    )


def _fixed_inputs(records: Sequence[Record]) -> dict[str, Any]:
    """Input fields present with the same value in every record."""
    inputs = [r.get("input") or {} for r in records]
    names: dict[str, None] = {}
    for body in inputs:
        names.update(dict.fromkeys(body))
    return {
        n: inputs[0][n]
        for n in names
        if all(n in b for b in inputs) and len({_canon(b[n]) for b in inputs}) == 1
    }


def _page(out_dir: Path, records: list[Record], axes: list[str], s: ReportSummary) -> str:
    runs = read_runs(out_dir)
    run = runs[-1] if runs else RunLine()
    spec = run.get("spec")
    name = run.get("name") or (PurePosixPath(str(spec)).stem if spec else "") or out_dir.name
    endpoint = run.get("endpoint") or (records[0].get("endpoint") if records else "")
    meta = [html.escape(str(x)) for x in (endpoint, run.get("backend")) if x]
    if run.get("spec_sha256"):
        meta.append(f"spec sha256 <code>{html.escape(str(run['spec_sha256']))}</code>")
    if run.get("runner_version"):
        meta.append(f"runner {html.escape(str(run['runner_version']))}")
    sizes = " × ".join(f"{html.escape(a)} ({len(_values(records, a))})" for a in axes)
    fixed = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{_label(v, 100)}</td></tr>"
        for k, v in _fixed_inputs(records).items()
    )
    if not records:
        body = "<p>No requests in the manifest yet.</p>"
    elif len(axes) >= 2:
        body = _pages(out_dir, records, axes) if len(axes) > 2 else _table(out_dir, records, *axes)
    else:
        body = _strip(out_dir, records, axes[0] if axes else None)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(str(name))} — report</title><style>{CSS}</style></head><body>"
        f'<header><h1>{html.escape(str(name))}</h1><p class="meta">{" · ".join(meta)}</p>'
        f'<span class="n ok">{s.ok} ok</span><span class="n failed">{s.failed} failed</span>'
        f'<span class="n pending">{s.pending} pending</span>'
        + (f'<p class="meta">axes: {sizes}</p>' if sizes else "")
        + (f'<table class="fixed"><caption>fixed inputs</caption>{fixed}</table>' if fixed else "")
        + f"</header><main>{body}</main></body></html>\n"
    )
