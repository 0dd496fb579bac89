"""The server a run talks to: fal.ai (or a fal-compatible server named by FAL_*_URL) with the
key from the environment, or the embedded emulator started on a loopback port with a one-time
key. Both are reached through the same fal client code. A missing key or a URL that is not
allowed is a UsageError, raised before anything is made or sent."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

from ..errors import UsageError
from ..urls import base_url_problem
from .falapi import ServerConfig

DEFAULT_QUEUE_URL = "https://queue.fal.run"
DEFAULT_RUN_URL = "https://fal.run"
DEFAULT_REST_URL = "https://rest.fal.ai"


def fal_key(env: Mapping[str, str]) -> str:
    """FAL_KEY, else FAL_KEY_ID:FAL_KEY_SECRET (as the official clients read them)."""
    key = env.get("FAL_KEY", "").strip()
    name = "FAL_KEY"
    if not key:
        key_id, secret = env.get("FAL_KEY_ID", "").strip(), env.get("FAL_KEY_SECRET", "").strip()
        key, name = (f"{key_id}:{secret}" if key_id and secret else ""), "FAL_KEY_ID/SECRET"
    if not key:
        raise UsageError(
            "backend 'fal' needs an API key: set FAL_KEY (or FAL_KEY_ID and "
            "FAL_KEY_SECRET), or run offline with --backend local"
        )
    if not (key.isascii() and key.isprintable()):  # an HTTP header cannot carry it
        raise UsageError(
            f"{name} holds a control character or a non-ASCII letter, which no key has "
            "(a paste gone wrong?). HINT: copy the key again from fal.ai's dashboard"
        )
    return key


def server_url(env: Mapping[str, str], name: str, default: str) -> str:
    """A base URL from the environment (`default` when the variable is unset): https, or plain
    http on a loopback host only (urls.base_url_problem has the rules). An empty variable
    is a mistake, not the default. The UsageError names the variable and never repeats the
    URL's password or query."""
    if name not in env:
        return default
    url = env[name].strip()
    if not url:
        raise UsageError(
            f"{name} is set but empty. HINT: unset it to use {default}, or give the server's URL"
        )
    problem = base_url_problem(url)
    if problem is not None:
        raise UsageError(f"{name}={_shown_url(url)} {problem}")
    return url.rstrip("/")


def _shown_url(url: str) -> str:
    """A URL as an error repeats it: scheme, host, port and path only (no user name, password,
    query or fragment, where a secret may sit)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(not a URL)"
    if "://" not in url:  # no scheme: anything may be a password (`user:secret@host`)
        return repr(url[:200]) if not any(c in url for c in "@?#") else "(not shown)"
    host = parts.netloc.rpartition("@")[2]
    return repr(f"{parts.scheme}://{host}{parts.path}"[:200])


def fal_server(env: Mapping[str, str]) -> ServerConfig:
    """fal.ai (or the FAL_*_URL servers) and the API key, from the environment; UsageError
    when the API key is missing or a URL is not allowed."""
    return ServerConfig(
        queue_url=server_url(env, "FAL_QUEUE_URL", DEFAULT_QUEUE_URL),
        run_url=server_url(env, "FAL_RUN_URL", DEFAULT_RUN_URL),
        rest_url=server_url(env, "FAL_REST_URL", DEFAULT_REST_URL),
        api_key=fal_key(env),
    )


@contextlib.asynccontextmanager
async def backend_server(
    backend: str, env: Mapping[str, str], allow_remote_fetch: bool = False
) -> AsyncIterator[ServerConfig]:
    """The server to talk to: fal.ai (or FAL_*_URL), or a fresh embedded emulator that
    requires a one-time key, so the local run authenticates exactly like a fal run. The
    emulator fetches http(s) inputs only with `allow_remote_fetch` (offline by default)."""
    if backend == "fal":
        yield fal_server(env)
        return
    from ..emulator import Emulator, EmulatorSettings

    token = secrets.token_urlsafe(24)
    emulated = EmulatorSettings(keys=frozenset({token}), allow_remote_fetch=allow_remote_fetch)
    async with Emulator(emulated) as emulator:
        yield ServerConfig(emulator.queue_url, emulator.run_url, emulator.queue_url, token)
