"""Executor overhead benchmark: the runner's full product path against the thinnest aiohttp
loop and the official fal-client, all against ONE emulator server over HTTPS, in one run.

    python benchmarks/bench_executor.py [--requests N] [--concurrency C] [--latency S] [--json]

Every process is separate, so CPU times are each contender's own:

* the server: the emulator (`runner.emulator.Emulator` over TLS on loopback ports), plus a
  stdin/stdout pipe that answers "stats" with its counters and its own CPU time; the parent
  diffs them around each contender;
* each contender: a fresh child of this script (`--_client NAME`), so SSL_CERT_FILE is set
  before aiohttp / httpx / fal_client are imported (fal-client reads its hosts at import; the
  runner's aiohttp session takes its CA only from SSL_CERT_FILE). It reports wall and CPU time
  measured around the work only (not interpreter start or imports).

See benchmarks/README.md for what each contender does and what the ratios mean.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ENDPOINT = "fal-ai/flux-1/dev/image-to-image"
KEY = "bench-key"
CONTENDERS = ("thin", "thin-sse", "thin-job", "runner", "fal-client")
OTHERS = ("thin", "thin-sse", "thin-job", "fal-client")  # what the runner is compared with
THIN_POLL = 0.05  # the thin loop's fixed status interval (seconds)
CHILD_TIMEOUT = 300


# -- shared helpers ----------------------------------------------------------------------
def make_image_uri() -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def make_body(i: int, image_uri: str) -> dict[str, Any]:
    """The same body for every contender: seed i, 40 steps (the emulator's latency unit)."""
    return {
        "image_url": image_uri,
        "prompt": "a lighthouse in a storm, oil painting",
        "seed": i,
        "num_inference_steps": 40,
    }


def cpu_seconds() -> float:
    """User + system CPU of this process (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the server (child process) ----------------------------------------------------------
def serve_main(argv: list[str]) -> None:
    """The emulator over TLS with a stats pipe: one line "stats" on stdin -> one JSON line on
    stdout."""
    import ssl

    sys.path.insert(0, str(ROOT))
    from runner.emulator import Emulator, EmulatorSettings

    parser = argparse.ArgumentParser(prog="bench_executor.py --_serve")
    for option in ("--tls-cert", "--tls-key"):
        parser.add_argument(option)  # neither: plain HTTP (--http)
    parser.add_argument("--latency", type=float, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    args = parser.parse_args(argv)
    settings = EmulatorSettings(latency=args.latency, concurrency=args.concurrency)

    async def main() -> None:
        context = None
        if args.tls_cert:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(args.tls_cert, args.tls_key)
        emulator = await Emulator(settings).start(ssl_context=context)
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def snapshot() -> dict[str, Any]:
            s = emulator.stats
            return {
                "requests": dict(s.requests),
                "submissions": s.submissions,
                "status_calls": s.status_calls,
                "stream_calls": s.stream_calls,
                "result_calls": s.result_calls,
                "completed": s.completed,
                "failed": s.failed,
                "max_in_progress": s.max_in_progress,
                "cpu": cpu_seconds(),
            }

        def read_stdin() -> None:
            for line in sys.stdin:
                if line.strip() == "stats":
                    stats = asyncio.run_coroutine_threadsafe(_call(snapshot), loop).result()
                    print(json.dumps(stats), flush=True)
            loop.call_soon_threadsafe(done.set)  # stdin closed: stop

        print(f"queue: {emulator.queue_url}", flush=True)
        print(f"run: {emulator.run_url}", flush=True)
        threading.Thread(target=read_stdin, daemon=True).start()
        try:
            await done.wait()
        finally:
            await emulator.stop()

    asyncio.run(main())


async def _call(fn: Any) -> Any:
    return fn()


class Server:
    """The emulator subprocess, with stats queried over its stdin/stdout."""

    def __init__(
        self, cert: Path | None, key: Path | None, latency: float, concurrency: int
    ) -> None:
        cmd = [sys.executable, __file__, "--_serve", "--latency", str(latency)]
        if cert is not None and key is not None:
            cmd += ["--tls-cert", str(cert), "--tls-key", str(key)]
        cmd += ["--concurrency", str(concurrency)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        assert self.proc.stdout is not None
        urls = {}
        while len(urls) < 2:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the emulator exited before printing its URLs")
            name, _, url = line.strip().partition(": ")
            urls[name] = url
        self.queue_url, self.run_url = urls["queue"], urls["run"]

    def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        result: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return result

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    routes = set(before["requests"]) | set(after["requests"])
    out: dict[str, Any] = {
        "requests": {
            r: after["requests"].get(r, 0) - before["requests"].get(r, 0)
            for r in sorted(routes)
            if after["requests"].get(r, 0) - before["requests"].get(r, 0)
        }
    }
    for name in ("submissions", "status_calls", "stream_calls", "result_calls", "completed"):
        out[name] = after[name] - before[name]
    out["failed"] = after["failed"] - before["failed"]
    out["cpu"] = after["cpu"] - before["cpu"]
    return out


# -- the contenders (child processes) ----------------------------------------------------
async def thin(
    args: argparse.Namespace, image_uri: str, sse: bool = False, job: bool = False
) -> dict[str, Any]:
    """The honest minimum: submit, poll status every THIN_POLL s (or, with sse, read the
    status stream until COMPLETED, as the runner does), result, download. With job, also what
    any batch job must do: write each image to a file and one flushed JSON line a request."""
    import ssl

    import aiohttp

    out = Path(args.out)
    if job:
        (out / "images").mkdir(parents=True, exist_ok=True)
    journal = (out / "journal.jsonl").open("a") if job else None

    ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    headers = {"Authorization": f"Key {KEY}"}
    sem = asyncio.Semaphore(args.concurrency)
    calls = {"submit": 0, "status": 0, "result": 0, "download": 0}
    ok = 0

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        nonlocal ok
        async with sem:
            calls["submit"] += 1
            async with session.post(
                f"{args.queue_url}/{ENDPOINT}", json=make_body(i, image_uri), headers=headers
            ) as resp:
                resp.raise_for_status()
                handle = await resp.json()
            done = False
            while sse and not done:  # the status stream, as the runner reads it
                calls["status"] += 1
                async with session.get(
                    handle["status_url"] + "/stream", params={"logs": "0"}, headers=headers
                ) as resp:
                    resp.raise_for_status()
                    async for line in resp.content:
                        done = done or (line.startswith(b"data:") and b'"COMPLETED"' in line)
            while not done:  # plain polling at a fixed interval
                calls["status"] += 1
                async with session.get(
                    handle["status_url"], params={"logs": "0"}, headers=headers
                ) as resp:
                    done = (await resp.json())["status"] == "COMPLETED"
                if not done:
                    await asyncio.sleep(THIN_POLL)
            calls["result"] += 1
            async with session.get(handle["response_url"], headers=headers) as resp:
                resp.raise_for_status()
                result = await resp.json()
            calls["download"] += 1
            async with session.get(result["images"][0]["url"]) as resp:
                resp.raise_for_status()
                data = await resp.read()
            if data:
                ok += 1
            if journal is not None:
                (out / "images" / f"{i}.png").write_bytes(data)
                journal.write(json.dumps({"i": i, "request_id": handle["request_id"]}) + "\n")
                journal.flush()

    connector = aiohttp.TCPConnector(ssl=ctx, limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(one(session, i) for i in range(args.requests)))
    if journal is not None:
        journal.close()
    return {"ok": ok, "client_calls": calls}


async def product(args: argparse.Namespace, image_uri: str) -> dict[str, Any]:
    """The full product path: run_requests (journal, retries policy, downloads, image saving)."""
    sys.path.insert(0, str(ROOT))
    import runner

    def requests() -> Any:
        for i in range(args.requests):
            body = make_body(i, image_uri)
            yield runner.Request(key=runner.request_key(ENDPOINT, body), input=body, vars={})

    settings = runner.RunSettings(
        endpoint=ENDPOINT,
        backend="fal",
        out=Path(args.out),
        execution=runner.Execution(concurrency=args.concurrency, timeout=120.0),
    )
    env = {
        "FAL_KEY": KEY,
        "FAL_QUEUE_URL": args.queue_url,
        "FAL_RUN_URL": args.run_url,
        "FAL_REST_URL": args.queue_url,
    }
    stats = await runner.run_requests(settings, requests(), env=env)
    images = sum(1 for p in (Path(args.out) / "images").rglob("*") if p.is_file())
    if images != stats.ok:
        raise RuntimeError(f"{stats.ok} requests ok but {images} images saved")
    return {"ok": stats.ok, "failed": stats.failed, "images_saved": images}


async def fal(args: argparse.Namespace, image_uri: str) -> dict[str, Any]:
    """fal_client.AsyncClient: submit + handle.get() (its default 0.1 s polling) + download."""
    import fal_client
    import httpx

    client = fal_client.AsyncClient(key=KEY)
    sem = asyncio.Semaphore(args.concurrency)
    ok = 0

    async def one(http: httpx.AsyncClient, i: int) -> None:
        nonlocal ok
        async with sem:
            handle = await client.submit(ENDPOINT, arguments=make_body(i, image_uri))
            result = await handle.get()
            resp = await http.get(result["images"][0]["url"])
            resp.raise_for_status()
            if resp.content:
                ok += 1

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(limits=limits) as http:
        await asyncio.gather(*(one(http, i) for i in range(args.requests)))
    return {"ok": ok}


def client_main(args: argparse.Namespace) -> None:
    image_uri = make_image_uri()
    work = {
        "thin": thin,
        "thin-sse": lambda a, u: thin(a, u, sse=True),
        "thin-job": lambda a, u: thin(a, u, sse=True, job=True),
        "runner": product,
        "fal-client": fal,
    }[args._client]
    # Imports happen before the clocks start (the contenders' own imports are then no-ops).
    modules = {"fal-client": ["fal_client", "httpx"], "runner": ["runner"]}
    for module in ["aiohttp", *modules.get(args._client, [])]:
        importlib.import_module(module)
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    report = asyncio.run(work(args, image_uri))
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    if args.profile:
        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(int(os.environ.get("BENCH_PROFILE_TOP", "25")))
        stats.sort_stats("cumulative").print_stats(40)
    print(json.dumps({**report, "wall": wall, "cpu": cpu}))


# -- the parent ----------------------------------------------------------------------------
def write_tls(folder: Path) -> dict[str, Path]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    for i, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(str(files["cert"]), append=i > 0)
    return files


def run_contender(
    name: str, args: argparse.Namespace, server: Server, ca: Path, out: Path
) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(
        SSL_CERT_FILE=str(ca),  # read by OpenSSL when aiohttp/httpx build their contexts
        NO_PROXY="*",
        FAL_KEY=KEY,
        FAL_QUEUE_RUN_HOST=server.queue_url.split("://", 1)[1],
        FAL_RUN_HOST=server.run_url.split("://", 1)[1],
        PYTHONPATH=str(ROOT),
    )
    env.pop("FAL_KEY_ID", None)
    env.pop("FAL_KEY_SECRET", None)
    cmd = [sys.executable, __file__, "--_client", name, "--queue-url", server.queue_url]
    cmd += ["--run-url", server.run_url, "--out", str(out)]
    cmd += ["--requests", str(args.requests), "--concurrency", str(args.concurrency)]
    if name in args.profile_names:
        cmd += ["--profile", name]
    before = server.stats()
    started = time.perf_counter()
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT, cwd=ROOT
    )
    wall_total = time.perf_counter() - started  # interpreter start and imports included
    after = server.stats()
    if proc.returncode != 0:
        raise RuntimeError(f"contender {name} failed:\n{proc.stderr[-3000:]}")
    if proc.stderr.strip() and name in args.profile_names:
        print(f"--- profile of {name} ---\n{proc.stderr}", file=sys.stderr)
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    server_side = stats_delta(before, after)
    n = args.requests
    report.update(
        server=server_side,
        rps=n / report["wall"],
        wall_total=wall_total,
        rps_total=n / wall_total,
        cpu_ms_per_request=1000 * report["cpu"] / n,
        server_cpu_ms_per_request=1000 * server_side["cpu"] / n,
        http_requests=sum(server_side["requests"].values()),
        http_per_request=sum(server_side["requests"].values()) / n,
        status_per_request=(server_side["status_calls"] + server_side["stream_calls"]) / n,
    )
    complete = server_side["completed"] == n and not server_side["failed"]
    if report["ok"] != n or server_side["submissions"] != n or not complete:
        raise RuntimeError(f"contender {name}: {report['ok']}/{n} ok, report {report}")
    return report


def bench(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-executor-") as tmp:
        folder = Path(tmp)
        tls = write_tls(folder)
        if args.http:
            server = Server(None, None, args.latency, args.server_concurrency)
        else:
            server = Server(tls["cert"], tls["key"], args.latency, args.server_concurrency)
        try:
            results = {}
            for name in args.order:
                results[name] = run_contender(name, args, server, tls["ca"], folder / name)
        finally:
            server.close()
    # each of C slots runs ceil(N/C) requests back to back, each at least `latency` long
    ideal = -(-args.requests // args.concurrency) * args.latency
    r = results["runner"]
    others = [n for n in OTHERS if n in results]
    return {
        "settings": {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "latency": args.latency,
            "server_concurrency": args.server_concurrency,
            "thin_poll_interval": THIN_POLL,
            "ideal_wall": ideal,
            "cpus": os.cpu_count(),
            "protocol": "HTTP" if args.http else "HTTPS",
        },
        "contenders": results,
        "ratios": {
            **{f"runner/{n} throughput": r["rps"] / results[n]["rps"] for n in others},
            **{
                f"runner/{n} throughput with start-up": r["rps_total"] / results[n]["rps_total"]
                for n in others
            },
            **{f"runner/{n} client CPU": r["cpu"] / results[n]["cpu"] for n in others},
        },
    }


def print_table(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(
        f"{s['requests']} requests, concurrency {s['concurrency']}, emulator latency "
        f"{s['latency']:g} s (ideal wall {s['ideal_wall']:.2f} s), {s['cpus']} CPUs, "
        f"{s['protocol']}"
    )
    head = ("contender", "wall s", "req/s", "eff", "client CPU ms/req", "server CPU ms/req")
    head2 = ("status calls/req", "HTTP req/req")
    print(
        f"{head[0]:<11}{head[1]:>8}{head[2]:>8}{head[3]:>6}{head[4]:>19}{head[5]:>19}"
        f"{head2[0]:>18}{head2[1]:>14}"
    )
    for name, r in report["contenders"].items():
        eff = f"{s['ideal_wall'] / r['wall']:.0%}" if s["ideal_wall"] else "-"
        print(
            f"{name:<11}{r['wall']:>8.2f}{r['rps']:>8.1f}{eff:>6}"
            f"{r['cpu_ms_per_request']:>19.2f}{r['server_cpu_ms_per_request']:>19.2f}"
            f"{r['status_per_request']:>18.2f}{r['http_per_request']:>14.2f}"
        )
    for name, value in report["ratios"].items():
        print(f"{name}: {value:.3f}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_serve":
        serve_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per contender")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--latency", type=float, default=0.5, help="emulator seconds/request")
    parser.add_argument("--server-concurrency", type=int, default=64, help="emulator slots")
    parser.add_argument(
        "--order",
        default=None,
        help=f"comma-separated contenders in run order, runner among them (default "
        f"{','.join(CONTENDERS)}; without fal-client under --http)",
    )
    parser.add_argument(
        "--profile",
        default="",
        help="comma-separated contenders to run under cProfile (top functions on stderr)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--http", action="store_true", help="plain HTTP on loopback instead of HTTPS"
    )
    # internal: one contender in a child process
    parser.add_argument("--_client", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--queue-url", help=argparse.SUPPRESS)
    parser.add_argument("--run-url", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._client:
        client_main(args)
        return
    if args.order is None:  # fal-client speaks HTTPS only (its hosts are host[:port])
        args.order = ",".join(n for n in CONTENDERS if not (args.http and n == "fal-client"))
    args.order = [n.strip() for n in args.order.split(",") if n.strip()]
    if args.http and "fal-client" in args.order:
        parser.error("fal-client speaks HTTPS only: leave it out of --order with --http")
    if "runner" not in args.order or len(set(args.order)) != len(args.order):
        parser.error("--order must name runner, and each contender at most once")
    if set(args.order) - set(CONTENDERS):
        parser.error(f"--order takes {', '.join(CONTENDERS)}")
    args.profile_names = {n.strip() for n in args.profile.split(",") if n.strip()}
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be at least 1")
    report = bench(args)
    if args.json:
        print(json.dumps(report, indent=None))
    else:
        print_table(report)


if __name__ == "__main__":
    main()
