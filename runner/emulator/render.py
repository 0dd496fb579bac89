"""A deterministic CPU stand-in for FLUX image-to-image (Pillow only): takes the decoded input
image and the model inputs, gives encoded images that depend on every input and on nothing else."""

from __future__ import annotations

import hashlib
import io
import random
from dataclasses import dataclass

from PIL import Image, ImageEnhance, ImageFilter

NSFW_WORDS = ("nsfw", "nude", "naked")


@dataclass(frozen=True)
class RenderParams:
    prompt: str
    seed: int
    strength: float = 0.95
    num_inference_steps: int = 40
    guidance_scale: float = 3.5
    output_format: str = "jpeg"
    max_side: int = 512


def output_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Same aspect as the input, long side capped at max_side, both sides multiples of 8."""
    scale = min(1.0, max_side / max(width, height))
    return (max(8, int(width * scale) // 8 * 8), max(8, int(height * scale) // 8 * 8))


def is_nsfw(prompt: str) -> bool:
    lowered = prompt.lower()
    return any(word in lowered for word in NSFW_WORDS)


def render(source: Image.Image, params: RenderParams, black: bool = False) -> bytes:
    """One output image, encoded as params.output_format. `black`: what fal sends back for an
    image its safety checker flagged."""
    size = output_size(*source.size, params.max_side)
    if black:
        return encode(Image.new("RGB", size), params.output_format)
    base = source.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    texture = _texture(size, params)
    return encode(Image.blend(base, texture, params.strength), params.output_format)


def encode(image: Image.Image, output_format: str) -> bytes:
    buffer = io.BytesIO()
    if output_format == "png":
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def content_type(output_format: str) -> str:
    return "image/png" if output_format == "png" else "image/jpeg"


def _texture(size: tuple[int, int], p: RenderParams) -> Image.Image:
    width, height = size
    digest = hashlib.sha256(p.prompt.encode()).digest()
    # The prompt picks the palette and the cell size; the seed lays out the cells.
    palette = list(digest[:12])
    cell = 4 + digest[12] % 13
    # Every input is folded into the RNG, so no two inputs can share an output by accident.
    key = f"{p.seed}|{p.num_inference_steps}|{p.guidance_scale!r}|{p.strength!r}|".encode()
    rng = random.Random(hashlib.sha256(key + digest).digest())
    cols, rows = -(-width // cell) + 1, -(-height // cell) + 1
    cells = Image.frombytes("P", (cols, rows), bytes(rng.randrange(4) for _ in range(cols * rows)))
    cells.putpalette(palette + [0] * (768 - len(palette)))
    texture = cells.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    # More steps, smoother image: a blur whose radius grows with the step count.
    texture = texture.filter(ImageFilter.GaussianBlur(p.num_inference_steps / 12))
    grain = Image.frombytes("L", size, rng.randbytes(width * height))
    texture = Image.blend(texture, Image.merge("RGB", (grain, grain, grain)), 0.08)
    # Guidance: how hard the prompt's colours are pushed (saturation and contrast).
    texture = ImageEnhance.Color(texture).enhance(0.4 + p.guidance_scale / 4)
    return ImageEnhance.Contrast(texture).enhance(0.7 + p.guidance_scale / 10)
