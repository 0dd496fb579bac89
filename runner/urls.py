"""URL rules the fal client and the emulator share, so neither imports the other: fal's queue
URL layout for one request, which hosts count as loopback (where plain http is allowed), and
what makes a server's base URL unusable."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

# A host name's characters (IDN hosts may also hold non-ASCII letters: the idna codec checks)
_HOST_CHARS = re.compile(r"[A-Za-z0-9._-]+")


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


def base_url_problem(url: str) -> str | None:
    """Why a server's base URL cannot be used, or None: it must be https (plain http on a
    loopback host only) with a host and a port in 1-65535, and carry no user name or
    password (the key travels in a header), no query string and no fragment (the client
    appends each endpoint's path to it). Any path is kept: a gateway may serve fal under
    one. The reason never repeats the URL (it may hold a password)."""
    if any(c.isspace() or not c.isprintable() for c in url):
        return "holds a space or a control character"
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed [IPv6 literal
        return f"is not a URL ({exc})"
    if "://" not in url:  # `127.0.0.1:8080`, `localhost:8080`, `queue.example`
        return (
            "has no scheme: start it with https:// (e.g. https://queue.fal.run), or http:// "
            "for a server on this machine (e.g. http://127.0.0.1:8080)"
        )
    if parts.scheme not in ("https", "http"):
        return "must be an https:// URL"
    if "@" in parts.netloc:
        return "must not hold a user name or password (the API key is read from FAL_KEY)"
    if "?" in url or "#" in url:
        return "must not have a query string or a fragment (each endpoint's path is appended)"
    host = parts.hostname
    if not host:
        return "has no host name"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        return "has an invalid port (a number from 1 to 65535)"
    if not _is_ip(host) and not _valid_host_name(host):
        return "has an invalid host name"
    if parts.scheme == "http" and not is_loopback(host):
        return "must be an https:// URL (plain http only on loopback)"
    return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _valid_host_name(host: str) -> bool:
    if host.isascii() and not _HOST_CHARS.fullmatch(host):
        return False
    try:
        host.rstrip(".").encode("idna")  # labels of 1 to 63 characters, none empty
    except UnicodeError:
        return False
    return True
