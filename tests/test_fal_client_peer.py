"""The official fal-client (in a subprocess, as it reads its hosts at import) against the
emulator over HTTPS with a trustme CA: submit -> status -> result, and a sync run."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from runner.emulator import Emulator, EmulatorSettings, Faults

from .conftest import png_data_uri

pytest.importorskip("fal_client")

CLIENT_SCRIPT = r"""
import json, sys
import fal_client

endpoint, image_uri = "fal-ai/flux-1/dev/image-to-image", sys.argv[1]
args = {"image_url": image_uri, "prompt": "a castle at dusk", "seed": 5, "num_images": 2}
handle = fal_client.submit(endpoint, arguments=args)
first = handle.status(with_logs=True)
events = [type(s).__name__ for s in handle.iter_events(with_logs=True, interval=0.02)]
done = handle.status(with_logs=True)
result = handle.get()
again = fal_client.result(endpoint, handle.request_id)
sync = fal_client.run(endpoint, arguments={**args, "sync_mode": True, "num_images": 1})
try:
    fal_client.run(endpoint, arguments={**args, "strength": 7})
    invalid = None
except fal_client.client.FalClientHTTPError as exc:
    invalid = {"status": exc.status_code, "detail": exc.message}
print(json.dumps({
    "request_id": handle.request_id, "first": type(first).__name__, "events": events,
    "done_logs": done.logs, "metrics": done.metrics, "result": result, "again": again,
    "sync": sync, "invalid": invalid,
}))
"""
TIMEOUT = 60


def image_uri() -> str:
    return png_data_uri(64, 48, "purple")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> dict[str, Path]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    for i, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(str(files["cert"]), append=i > 0)
    return files


def client_env(queue_url: str, run_url: str, ca_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(
        FAL_KEY="any-key-will-do",
        SSL_CERT_FILE=str(ca_file),
        NO_PROXY="*",
        FAL_QUEUE_RUN_HOST=queue_url.split("://", 1)[1],
        FAL_RUN_HOST=run_url.split("://", 1)[1],
    )
    env.pop("FAL_KEY_ID", None)
    env.pop("FAL_KEY_SECRET", None)
    return env


async def run_fal_client(queue_url: str, run_url: str, ca_file: Path) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLIENT_SCRIPT,
        image_uri(),
        env=client_env(queue_url, run_url, ca_file),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode == 0, err.decode()[-3000:]
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def check_client_report(report: dict[str, Any], queue_url: str) -> None:
    assert report["first"] in ("Queued", "InProgress", "Completed")
    assert report["events"][-1] == "Completed"
    assert isinstance(report["done_logs"], list) and "inference_time" in report["metrics"]
    result = report["result"]
    assert result == report["again"] and result["seed"] == 5
    assert [(i["width"], i["height"]) for i in result["images"]] == [(64, 48)] * 2
    assert all(i["url"].startswith(queue_url + "/files/") for i in result["images"])
    (sync_image,) = report["sync"]["images"]
    assert sync_image["url"].startswith("data:image/jpeg;base64,")
    assert report["invalid"]["status"] == 422
    assert report["invalid"]["detail"][0]["loc"] == ["body", "strength"]


@pytest.fixture
async def tls_emulator(tls_files: dict[str, Path]) -> AsyncIterator[Emulator]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files["cert"], tls_files["key"])
    # Ingress 503s and 429s on the way: the client's own retries must carry it through.
    faults = Faults(p_503_ingress=0.15, p_429=0.1)
    emu = Emulator(EmulatorSettings(latency=0.05, faults=faults, retry_after=0.05, seed=3))
    await emu.start(ssl_context=context)
    yield emu
    await emu.stop()


async def test_official_client_in_process_emulator(
    tls_emulator: Emulator, tls_files: dict[str, Path]
) -> None:
    assert tls_emulator.queue_url.startswith("https://127.0.0.1:")
    report = await run_fal_client(tls_emulator.queue_url, tls_emulator.run_url, tls_files["ca"])
    check_client_report(report, tls_emulator.queue_url)
    stats = tls_emulator.stats
    assert stats.submissions == 1 and stats.run_calls == 2
    assert stats.faults_of("503_ingress") + stats.faults_of("429") > 0  # retried through


@pytest.mark.skipif(
    importlib.util.find_spec("runner.cli") is None,
    reason="runner/cli.py (the serve subcommand) is not there yet",
)
async def test_official_client_against_runner_serve(tls_files: dict[str, Path]) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runner",
        "serve",
        "--port",
        "0",
        "--run-port",
        "0",
        "--tls-cert",
        str(tls_files["cert"]),
        "--tls-key",
        str(tls_files["key"]),
        "--latency",
        "0.02",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        urls: dict[str, str] = {}
        while len(urls) < 2:
            line = (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode()
            assert line, "runner serve exited before printing its URLs"
            name, _, url = line.strip().partition(": ")
            if name in ("queue", "run"):
                urls[name] = url
        report = await run_fal_client(urls["queue"], urls["run"], tls_files["ca"])
        check_client_report(report, urls["queue"])
    finally:
        proc.terminate()
        await proc.communicate()
