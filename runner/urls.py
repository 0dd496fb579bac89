"""URL rules the fal client and the emulator share, so neither imports the other: fal's queue
URL layout for one request, and which hosts count as loopback (where plain http is allowed)."""

from __future__ import annotations

import ipaddress


def app_base(endpoint_id: str) -> str:
    """owner/alias of an endpoint id (status/result/cancel drop the path), namespaces kept."""
    parts = endpoint_id.strip("/").split("/")
    if parts[0] in ("workflows", "comfy"):
        return "/".join(parts[:3])
    return "/".join(parts[:2])


def request_url(queue_url: str, endpoint_id: str, request_id: str) -> str:
    """A queued request's result URL; its status and cancel URLs are `/status` and `/cancel`
    under it."""
    return f"{queue_url.rstrip('/')}/{app_base(endpoint_id)}/requests/{request_id}"


def is_loopback(host: str | None) -> bool:
    """True for localhost and loopback addresses."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
