"""Every scale figure of issue 7 in one command, each against its stated limit, written into
benchmarks/README.md as a table (medians of several runs, min-max).

    python benchmarks/run_all.py [--rows 1000000] [--repeat 3] [--workdir DIR] [--no-write]
        [--only open,resume,plan,memory,executor]

What is measured (each in a fresh process; peak RSS is that process's own):

* journal read: opening a 1,000,000-request run folder for a resume, `run_requests` with no
  requests: the journal's resume state and the check of every output file, a stat each
  (limit 5 s, 250 MB);
* no-op resume: `runner run SPEC` on a finished folder, grid expansion and validation
  included: nothing is sent (limit 10 s); for three grid shapes (synth.py's): 1,000 prompts x
  1,000 seeds, a prompt template reading two {lines} files x a seed range, and a {csv} axis x
  a {lines} axis x a {range} with exclude and include;
* plan: `runner plan SPEC` of a 1,000,000-row grid (limit 5 s, 150 MB): those three shapes,
  one axis of 1,000,000 prompt lines, and a template reading two 1,000-line files (whose
  million values no table holds);
* run memory: peak RSS of `runner run` sending N requests to the emulator (its own process),
  for two sizes: flat means the larger run needs no more than a few MB more;
* executor: bench_executor.py, 5,000 requests at concurrency 64 against a zero-latency
  emulator: the runner's throughput over the `thin-job` loop's (same protocol steps, each
  image written to a file, one flushed JSON line per request), start-up included (limit 0.8).

The synthetic run folders (benchmarks/synth.py) are written once into --workdir and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CODE = ROOT  # the checkout whose runner is measured (--code)
BENCH = Path(__file__).resolve().parent
README = BENCH / "README.md"
BEGIN, END = "<!-- run_all: begin -->", "<!-- run_all: end -->"
sys.path.insert(0, str(BENCH))

from synth import (  # noqa: E402
    QUEUE_URL,
    SHAPES,
    write_journal,
    write_spec,
    write_two_files_spec,
)

FAL_ENV = {"FAL_KEY": "bench", "FAL_QUEUE_URL": QUEUE_URL, "FAL_RUN_URL": QUEUE_URL}
FAL_ENV["FAL_REST_URL"] = QUEUE_URL


# -- one measured process -----------------------------------------------------------------
def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run cmd under a small wrapper process: wall seconds and the command's peak RSS. It runs
    in CODE, so `python -m runner` is that checkout's runner (--code: another version's)."""
    wrapper = [sys.executable, __file__, "--_measure", "--", *cmd]
    proc = subprocess.run(
        wrapper, env={**os.environ, **(env or {})}, capture_output=True, text=True, cwd=CODE
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    if result["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {result['rc']}:\n{proc.stderr[-3000:]}")
    result["stdout"] = "\n".join(lines[:-1])
    return result


def measure_main(cmd: list[str]) -> None:
    started = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KB on Linux
    sys.stdout.write(proc.stdout)
    print(json.dumps({"rc": proc.returncode, "wall": wall, "rss_mb": peak_kb / 1024}))


# -- the figures ----------------------------------------------------------------------------
def open_for_resume(out: str) -> None:
    """`--_open OUT`: run_requests over no requests: what a resume reads before its first row."""
    import asyncio

    import runner

    settings = runner.RunSettings(
        endpoint="fal-ai/flux-1/dev/image-to-image",
        backend="fal",
        out=Path(out),
        execution=runner.Execution(),
    )
    stats = asyncio.run(runner.run_requests(settings, [], env=FAL_ENV))
    if stats.failed or stats.submitted:
        raise SystemExit(f"opening the folder changed it: {stats}")


def synthetic(workdir: Path, rows: int, shape: str = "prompts") -> Path:
    """A finished run folder of `rows` requests of a synth.py shape, written once."""
    folder = workdir / (f"synthetic-{rows}" if shape == "prompts" else f"{shape}-{rows}")
    spec = folder / "job.yaml"
    if not (folder / "complete").exists():
        print(f"writing a synthetic {rows}-request run folder in {folder} (once)", flush=True)
        SHAPES[shape](folder, rows)
        write_journal(spec)
        (folder / "complete").write_text("")
    return spec


def runner_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "runner", *args]


def fresh_run(workdir: Path, rows: int) -> dict[str, Any]:
    """`runner run` of `rows` new requests against the emulator in its own process."""
    from bench_executor import Server

    folder = workdir / f"fresh-{rows}"
    spec = write_spec(folder, rows)
    server = Server(None, None, 0.0, 64)
    try:
        out = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
        env = {
            "FAL_KEY": "bench",
            "FAL_QUEUE_URL": server.queue_url,
            "FAL_RUN_URL": server.run_url,
            "FAL_REST_URL": server.queue_url,
        }
        args = ["run", str(spec), "--out", str(out), "--no-progress", "--concurrency", "64"]
        return measure(runner_cli(*args), env)
    finally:
        server.close()


def executor_ratio() -> dict[str, Any]:
    cmd = [sys.executable, str(BENCH / "bench_executor.py"), "--requests", "5000"]
    cmd += ["--concurrency", "64", "--latency", "0", "--http", "--order", "thin-job,runner"]
    result = measure([*cmd, "--json"])
    report = json.loads(result["stdout"].strip().splitlines()[-1])
    return {
        "ratio": report["ratios"]["runner/thin-job throughput with start-up"],
        "runner": report["contenders"]["runner"]["rps_total"],
        "thin": report["contenders"]["thin-job"]["rps_total"],
    }


def repeat(n: int, fn: Callable[[], dict[str, Any]]) -> list[dict[str, Any]]:
    return [fn() for _ in range(n)]


def spread(values: list[float], fmt: str) -> str:
    med = statistics.median(values)
    return f"{med:{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})"


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0]
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GB RAM, Python {platform.python_version()}, "
        f"{platform.system()}; load average {load:.1f} when the run began"
    )


def bench(args: argparse.Namespace) -> tuple[list[list[str]], str]:
    host = machine()  # the load as the run begins
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    n, k = args.repeat, f"{args.rows:,}"
    rows: list[list[str]] = []
    wanted = set(args.only.split(",")) if args.only else None

    def add(what: str, limit: str, figure: str, ok: bool) -> None:
        rows.append([what, limit, figure, "met" if ok else "NOT met"])
        print(f"{what}: {figure} (limit {limit}) {'met' if ok else 'NOT met'}", flush=True)

    if wanted is None or "open" in wanted:
        out = str(synthetic(workdir, args.rows).parent / "out")
        read = repeat(n, lambda: measure([sys.executable, __file__, "--_open", out], FAL_ENV))
        walls, rss = [r["wall"] for r in read], [r["rss_mb"] for r in read]
        add(
            f"open a {k}-request run folder for a resume (journal + a stat of every output file)",
            "≤ 5 s, ≤ 250 MB",
            f"{spread(walls, '.2f')} s, {spread(rss, '.0f')} MB",
            statistics.median(walls) <= 5 and max(rss) <= 250,
        )
    side = round(args.rows ** (1 / 3))
    for shape, described in (
        ("prompts", f"{args.rows // 1000:,} prompts × 1,000 seeds"),
        ("two-files", f"a prompt reading two {side:,}-line files × {side:,} seeds"),
        ("csv", f"{side:,} csv rows × {side:,} lines × {side:,} seeds, exclude and include"),
    ):
        if wanted is not None and "resume" not in wanted:
            break
        spec = synthetic(workdir, args.rows, shape)
        resume_cmd = runner_cli("run", str(spec), "--no-progress")
        resumes = repeat(n, lambda cmd=resume_cmd: measure(cmd, FAL_ENV))
        for r in resumes:  # a no-op: every row already done, nothing submitted
            said = r["stdout"]
            if "already done" not in said or " 0 submissions" not in said or r["rc"]:
                raise RuntimeError(f"the resume was not a no-op: {r['stdout']}")
        walls, rss = [r["wall"] for r in resumes], [r["rss_mb"] for r in resumes]
        add(
            f"no-op resume of {k} rows ({described}; `runner run`, expansion included)",
            "≤ 10 s",
            f"{spread(walls, '.1f')} s, {spread(rss, '.0f')} MB",
            statistics.median(walls) <= 10,
        )
    grids = (
        (f"{args.rows // 1000:,} prompts × 1,000 seeds", write_spec, {}),
        (f"one axis: a file of {k} prompt lines", write_spec, {"seeds": 1}),
        (
            f'`prompt: "a {{animal}} at {{time}}"`, two {side:,}-line files × {side:,} seeds',
            write_two_files_spec,
            {},
        ),
        (
            f"the same, two {round(args.rows**0.5):,}-line files × 1 seed (the prompt's "
            f"{args.rows:,} values worked out one by one)",
            write_two_files_spec,
            {"seeds": 1},
        ),
        (
            f"{side:,} csv rows × {side:,} lines × {side:,} seeds, exclude and include",
            SHAPES["csv"],
            {},
        ),
    )
    for i, (shape, write, options) in enumerate(grids):
        if wanted is not None and "plan" not in wanted:
            break
        grid_spec = write(workdir / f"plan-{i}-{args.rows}", args.rows, **options)
        plans = repeat(n, lambda path=grid_spec: measure(runner_cli("plan", str(path))))
        walls, rss = [r["wall"] for r in plans], [r["rss_mb"] for r in plans]
        add(
            f"`runner plan` of {k} rows ({shape})",
            "≤ 5 s, ≤ 150 MB",
            f"{spread(walls, '.1f')} s, {spread(rss, '.0f')} MB",
            statistics.median(walls) <= 5 and max(rss) <= 150,
        )
    if wanted is None or "memory" in wanted:
        small, large = args.memory_sizes
        mem_small = repeat(n, lambda: fresh_run(workdir, small))
        mem_large = repeat(1, lambda: fresh_run(workdir, large))
        grow = statistics.median(r["rss_mb"] for r in mem_large) - statistics.median(
            r["rss_mb"] for r in mem_small
        )
        add(
            f"run memory, {small:,} → {large:,} requests (peak RSS)",
            "flat",
            f"{spread([r['rss_mb'] for r in mem_small], '.0f')} → "
            f"{spread([r['rss_mb'] for r in mem_large], '.0f')} MB (+{grow:.0f} MB)",
            grow <= 10,
        )
    if wanted is None or "executor" in wanted:
        ratios = repeat(n, executor_ratio)
        add(
            "executor at saturation: runner / thin-job throughput (5,000 requests, "
            "concurrency 64, zero latency, start-up included)",
            "≥ 0.8",
            f"{spread([r['ratio'] for r in ratios], '.2f')} "
            f"({spread([r['runner'] for r in ratios], '.0f')} vs "
            f"{spread([r['thin'] for r in ratios], '.0f')} req/s)",
            statistics.median(r["ratio"] for r in ratios) >= 0.8,
        )
    return rows, host


def write_readme(rows: list[list[str]], described: str, command: str) -> None:
    table = ["| measurement | limit | median (min–max) | |", "|---|---|---|---|"]
    table += ["| " + " | ".join(row) + " |" for row in rows]
    block = "\n".join([BEGIN, f"Machine: {described}. Command: `{command}`.", "", *table, END])
    text = README.read_text(encoding="utf-8")
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Scale: `run_all.py`\n\n" + block + "\n"
    README.write_text(text, encoding="utf-8")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--_measure":
        measure_main(sys.argv[3:])
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--_open":
        sys.path.insert(0, str(ROOT))
        open_for_resume(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median, min-max)")
    parser.add_argument("--memory-sizes", type=int, nargs=2, default=(5_000, 50_000))
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "runner-bench"
    )
    parser.add_argument("--no-write", action="store_true", help="do not update README.md")
    parser.add_argument(
        "--only",
        help="some of open,resume,plan,memory,executor (comma-separated); README.md untouched",
    )
    parser.add_argument(
        "--code",
        type=Path,
        help="measure the runner of another checkout (an older version, for a before/after); "
        "README.md untouched",
    )
    args = parser.parse_args()
    global CODE
    if args.code:
        CODE = args.code.resolve()
    rows, described = bench(args)
    command = "python benchmarks/run_all.py " + " ".join(sys.argv[1:])
    if not args.no_write and not args.only and not args.code:
        write_readme(rows, described, command.strip())
        print(f"wrote the table into {README}")


if __name__ == "__main__":
    main()
