"""Synthetic run folders: a spec of N rows and a journal for it written directly, as a finished
run would leave it, without a server. For the journal-reading, resume and plan measurements;
`--layout old` writes the pre-lean layout (three full lines a request).

    python benchmarks/synth.py DIR [--rows 1000000] [--shape prompts|two-files|csv] [--layout old]

Shapes: `prompts` (a prompts file x a seed range), `two-files` (a prompt template reading two
{lines} axes, x a seed range), `csv` (a {csv} axis x a {lines} axis x a {range}, with exclude
and include).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ENDPOINT = "fal-ai/flux-1/dev/image-to-image"
# The run's fal server, as runner records it (scheme://host:port): a resume must point
# FAL_QUEUE_URL at the same one, else no row counts as done (a port nothing listens on).
QUEUE_URL, SERVER = "http://127.0.0.1:9", "http://127.0.0.1:9"
PLACEHOLDER = b"synthetic output"  # the image files' content (only their size is checked)
SEEDS = 1000


def write_spec(folder: Path, rows: int, backend: str = "fal", seeds: int = SEEDS) -> Path:
    """folder/job.yaml: ceil(rows / seeds) prompts x `seeds` seeds (a prompts file, a range):
    1000 x 1000 for a million rows by default; seeds=1 makes one axis of `rows` lines."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(buffer, format="PNG")
    (folder / "input.png").write_bytes(buffer.getvalue())
    prompts = max(1, -(-rows // seeds))
    (folder / "prompts.txt").write_text(
        "".join(f"a lighthouse in a storm number {i}, oil painting\n" for i in range(prompts))
    )
    seeds = min(rows, seeds)
    (folder / "job.yaml").write_text(
        f"""version: 1
name: synthetic
endpoint: {ENDPOINT}
backend: {backend}
output: out
defaults:
  image_url: input.png
  num_inference_steps: 28
  strength: 0.85
matrix:
  prompt: {{lines: prompts.txt}}
  seed: {{range: [0, {seeds - 1}]}}
limits: {{max_requests: {prompts * seeds}}}
"""
    )
    return folder / "job.yaml"


def _image(folder: Path) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(buffer, format="PNG")
    (folder / "input.png").write_bytes(buffer.getvalue())


def _side(rows: int) -> int:
    """The side of a cube of about `rows` cells."""
    return max(1, round(rows ** (1 / 3)))


def write_two_files_spec(
    folder: Path, rows: int, backend: str = "fal", seeds: int | None = None
) -> Path:
    """folder/job.yaml: `prompt: "a {animal} at {time}"`, animal and time each a {lines} file,
    crossed with a seed range: side x side x side rows (100 x 100 x 100 for a million), the
    prompt depending on two axes at once; with `seeds`, side x side x seeds (1,000 x 1,000 x 1
    for a million: the prompt has a million values, each worked out as its row comes)."""
    side = _side(rows)
    if seeds is not None:
        side = max(1, round((rows / seeds) ** 0.5))
    _image(folder)
    (folder / "animals.txt").write_text("".join(f"an animal number {i}\n" for i in range(side)))
    (folder / "times.txt").write_text("".join(f"hour {i} of the night\n" for i in range(side)))
    (folder / "job.yaml").write_text(
        f"""version: 1
name: two-files
endpoint: {ENDPOINT}
backend: {backend}
output: out
defaults:
  image_url: input.png
  num_inference_steps: 28
  strength: 0.85
  prompt: "a {{animal}} at {{time}}, oil painting"
matrix:
  animal: {{lines: animals.txt}}
  time: {{lines: times.txt}}
  seed: {{range: [0, {(seeds or side) - 1}]}}
limits: {{max_requests: {side * side * (seeds or side)}}}
"""
    )
    return folder / "job.yaml"


def write_csv_spec(folder: Path, rows: int, backend: str = "fal") -> Path:
    """folder/job.yaml: a {csv} axis (subject, strength, guidance) x a {lines} axis of styles x
    a seed {range}, side x side x side, less two exclude entries, plus two include rows."""
    side = _side(rows)
    _image(folder)
    (folder / "subjects.csv").write_text(
        "subject,strength,guidance_scale\n"
        + "".join(f"subject {i},0.{5 + i % 5},{2 + i % 3}\n" for i in range(side))
    )
    (folder / "styles.txt").write_text("".join(f"style number {i}\n" for i in range(side)))
    (folder / "job.yaml").write_text(
        f"""version: 1
name: csv-lines-range
endpoint: {ENDPOINT}
backend: {backend}
output: out
defaults:
  image_url: input.png
  num_inference_steps: 28
  prompt: "{{subject}} in the style of {{style}}"
matrix:
  rows: {{csv: subjects.csv}}
  style: {{lines: styles.txt}}
  seed: {{range: [0, {side - 1}]}}
exclude:
  - {{style: style number 3, seed: 1}}
  - {{subject: subject 1}}
include:
  - {{prompt: a lighthouse at night, seed: 1}}
  - {{subject: a harbour, style: charcoal, seed: 2}}
limits: {{max_requests: {side**3 + 2}}}
"""
    )
    return folder / "job.yaml"


SHAPES = {"prompts": write_spec, "two-files": write_two_files_spec, "csv": write_csv_spec}


def _line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def write_journal(spec: Path, layout: str = "lean", files: bool = True) -> int:
    """Expands the spec and writes OUT/manifest.jsonl as a finished run leaves it: for each
    request a submitting, a submitted and an ok line, in the layout README's "Output"
    documents (or the older one). Returns the number of requests."""
    sys.path.insert(0, str(ROOT))
    import runner

    checked = runner.check(spec)
    out = checked.spec.output
    out.mkdir(parents=True, exist_ok=True)
    run_id = "20260101T000000-synth0"
    backend = checked.spec.backend
    t = "2026-01-01T00:00:00.000Z"
    n = 0
    for i in range(256):
        (out / "images" / f"{i:02x}").mkdir(parents=True, exist_ok=True)
    with (out / "manifest.jsonl").open("wb", buffering=1 << 20) as fh:
        for n, request in enumerate(runner.expand(checked.spec, checked.endpoint), 1):
            key = request.key
            rid = f"{hashlib.md5(key.encode()).hexdigest()[:8]}-0000-4000-8000-{n:012d}"
            state = {"backend": backend, "server": SERVER, "attempts": 1, "possible_duplicates": 0}
            context = {"endpoint": ENDPOINT, "run_id": run_id}
            payload = {
                "input": dict(request.input),
                "input_files": {k: str(p) for k, p in request.files.items()},
                "vars": dict(request.vars),
            }
            output = {
                "file": f"images/{key[:2]}/{key}-0.jpg",
                "sha256": hashlib.sha256(key.encode()).hexdigest(),
                "width": 1024,
                "height": 768,
                "content_type": "image/jpeg",
                "bytes": len(PLACEHOLDER),
                "url": f"https://v3.fal.media/files/synthetic/{key}.jpg",
            }
            if files:  # the resume checks every output file is there, at its size
                (out / output["file"]).write_bytes(PLACEHOLDER)
            result = {
                "timings": {"inference": 1.234},
                "seed": request.input.get("seed", 0),
                "has_nsfw_concepts": [False],
            }
            head = {"key": key}
            if layout == "old":  # every line the whole record, input first (the old order)
                whole = {**head, **context, "backend": backend, "server": SERVER, **payload}
                whole.update(status="submitting", request_id=None, attempts=1)
                whole.update(possible_duplicates=0, time=t)
                fh.write(_line(whole))
                whole.update(status="submitted", request_id=rid, submitted_at=t)
                fh.write(_line(whole))
                whole.update(status="ok", outputs=[output], result=result)
                fh.write(_line(whole))
                continue
            fh.write(
                _line(
                    {**head, "status": "submitting", **state, "request_id": None, **context}
                    | {"time": t, **payload}
                )
            )
            fh.write(
                _line(
                    {**head, "status": "submitted", **state, "request_id": rid}
                    | {"submitted_at": t, "time": t}
                )
            )
            fh.write(
                _line(
                    {**head, "status": "ok", **state, "request_id": rid}
                    | {"time": t, "outputs": [output], "result": result}
                )
            )
    (out / "runs.jsonl").write_text(
        json.dumps({"run_id": run_id, "event": "start", "started": t, "synthetic": True}) + "\n"
    )
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="prompts")
    parser.add_argument("--layout", choices=("lean", "old"), default="lean")
    parser.add_argument("--no-files", action="store_true", help="no output files, journal only")
    args = parser.parse_args()
    spec = SHAPES[args.shape](args.folder, args.rows)
    n = write_journal(spec, args.layout, files=not args.no_files)
    size = (spec.parent / "out" / "manifest.jsonl").stat().st_size
    print(f"{spec}: {n} requests, journal {size / 1e6:.0f} MB ({args.layout})")


if __name__ == "__main__":
    main()
