"""The emulated model behind the endpoint: validates the input, loads the image, renders off the
event loop and builds fal's result body. Gives an `Outcome` (status code and body), never raises
for bad input."""

from __future__ import annotations

import asyncio
import base64
import random
import threading
import time
from typing import Any

from .images import ImageInputError, decode_image, fetch_bytes
from .render import RenderParams, content_type, is_nsfw, output_size, render
from .state import EmulatorState, Outcome, QueuedRequest
from .validation import Detail, validate_input

_seeds = random.SystemRandom()


def invalid(detail: Detail) -> Outcome:
    return Outcome(
        422, {"detail": detail}, error=str(detail[0]["msg"]), error_type=str(detail[0]["type"])
    )


def with_defaults(queued: QueuedRequest) -> dict[str, Any]:
    defaults = {k: v["default"] for k, v in queued.endpoint.fields.items() if "default" in v}
    return {**defaults, **queued.payload}


async def run_model(state: EmulatorState, queued: QueuedRequest) -> Outcome:
    """Runs the request to its Outcome (a 200 result or a 422 detail)."""
    detail = validate_input(queued.endpoint, queued.payload)
    if detail:
        queued.log("Input validation failed", "ERROR")
        return invalid(detail)
    inputs = with_defaults(queued)
    seed = inputs["seed"] if inputs.get("seed") is not None else _seeds.randrange(2**31)
    queued.log("Loading the input image")
    try:
        data = await fetch_bytes(state, inputs["image_url"])
    except ImageInputError as exc:
        queued.log(str(exc), "ERROR")
        return invalid([exc.item])
    params = [
        RenderParams(
            prompt=inputs["prompt"],
            seed=seed + i,
            strength=float(inputs["strength"]),
            num_inference_steps=int(inputs["num_inference_steps"]),
            guidance_scale=float(inputs["guidance_scale"]),
            output_format=inputs["output_format"],
            max_side=state.settings.max_side,
        )
        for i in range(int(inputs["num_images"]))
    ]
    flagged = bool(inputs["enable_safety_checker"]) and is_nsfw(inputs["prompt"])
    queued.log(f"Running {params[0].num_inference_steps} inference steps")
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    work = loop.run_in_executor(
        state.executor, _render_all, state, data, inputs["image_url"], params, flagged
    )
    # The simulated GPU time grows with the step count; the real render overlaps it.
    await asyncio.sleep(state.settings.latency * params[0].num_inference_steps / 40)
    try:
        rendered = await work
    except ImageInputError as exc:
        queued.log(str(exc), "ERROR")
        return invalid([exc.item])
    queued.inference_time = round(time.monotonic() - started, 4)
    ctype = content_type(params[0].output_format)
    images = []
    for encoded, (width, height) in rendered:
        if inputs["sync_mode"]:
            url = f"data:{ctype};base64,{base64.b64encode(encoded).decode()}"
        else:
            ext = "png" if params[0].output_format == "png" else "jpeg"
            url = f"{queued.base_url}/files/{state.add_file(encoded, ctype, ext=ext)}"
        images.append({"url": url, "width": width, "height": height, "content_type": ctype})
    queued.log(f"Generated {len(images)} image(s)")
    body = {
        "images": images,
        "timings": {"inference": queued.inference_time},
        "seed": seed,
        "has_nsfw_concepts": [flagged] * len(images),
        "prompt": inputs["prompt"],
    }
    return Outcome(200, body)


def _render_all(
    state: EmulatorState, data: bytes, url: str, params: list[RenderParams], flagged: bool
) -> list[tuple[bytes, tuple[int, int]]]:
    state.stats.render_threads.add(threading.current_thread().name)
    source = decode_image(data, url)
    out = []
    for p in params:
        encoded = render(source, p, black=flagged)
        out.append((encoded, output_size(*source.size, p.max_side)))
    return out
