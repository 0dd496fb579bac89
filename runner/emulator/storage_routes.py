"""File hosting and fal's storage upload flows: GET /files/{id}; the CDN v3 token + POST
/files/upload; the GCS-style initiate + PUT fallback."""

from __future__ import annotations

import time
from pathlib import PurePosixPath

from aiohttp import web

from .middleware import json_response
from .queue_routes import base_url
from .state import STATE, StoredFile

TOKEN_LIFETIME = 3600


def add_storage_routes(app: web.Application) -> None:
    app.router.add_post("/storage/auth/token", token, name="token")
    app.router.add_post("/storage/upload/initiate", initiate, name="initiate")
    app.router.add_put("/storage/upload/put/{file_id}", put_upload, name="put_upload")
    app.router.add_post("/files/upload", upload, name="upload")
    # one route name for both spellings, so faults on "file" reach every download
    app.router.add_get("/files/{file_id}{name:(?:/[^/]+)?}", get_file, name="file")


def _ext(name: str) -> str:
    return PurePosixPath(name).suffix.lstrip(".")[:8]


async def token(request: web.Request) -> web.Response:
    state = request.app[STATE]
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + TOKEN_LIFETIME))
    return json_response(
        200,
        {
            "token": state.new_token(),
            "token_type": "Bearer",
            "base_url": base_url(request),
            "expires_at": expires,
        },
    )


async def upload(request: web.Request) -> web.Response:
    state = request.app[STATE]
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if state.settings.keys is not None and (scheme != "Bearer" or value not in state.tokens):
        return json_response(401, {"detail": "Invalid or missing upload token"})
    data = await request.read()
    name = request.headers.get("X-Fal-File-Name", "upload.bin")
    ctype = request.headers.get("Content-Type", "application/octet-stream")
    file_id = state.add_file(data, ctype, name, ext=_ext(name))
    state.stats.uploads += 1
    return json_response(
        200,
        {
            "access_url": f"{base_url(request)}/files/{file_id}",
            "content_type": ctype,
            "file_name": name,
        },
    )


async def initiate(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        body = await request.json()
        name, ctype = str(body.get("file_name") or "upload.bin"), str(body["content_type"])
    except (ValueError, KeyError, AttributeError):
        return json_response(
            422,
            {
                "detail": [
                    {
                        "loc": ["body"],
                        "msg": "Expected {file_name, content_type}",
                        "type": "value_error",
                    }
                ]
            },
        )
    file_id = state.add_file(b"", ctype, name, ext=_ext(name))
    del state.files[file_id]  # reserved, not served until the PUT arrives
    state.pending_uploads[file_id] = StoredFile(b"", ctype, name)
    base = base_url(request)
    return json_response(
        200,
        {
            "upload_url": f"{base}/storage/upload/put/{file_id}",
            "file_url": f"{base}/files/{file_id}",
        },
    )


async def put_upload(request: web.Request) -> web.Response:
    state = request.app[STATE]
    file_id = request.match_info["file_id"]
    pending = state.pending_uploads.pop(file_id, None)
    if pending is None:
        return json_response(404, {"detail": "Unknown upload URL"})
    data = await request.read()
    ctype = request.headers.get("Content-Type", pending.content_type)
    state.files[file_id] = StoredFile(data, ctype, pending.name)
    state.stats.uploads += 1
    return web.Response(status=200)


async def get_file(request: web.Request) -> web.Response:
    stored = request.app[STATE].files.get(request.match_info["file_id"])
    if stored is None:
        return json_response(404, {"detail": "File not found"})
    return web.Response(body=stored.data, headers={"Content-Type": stored.content_type})
