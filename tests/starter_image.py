"""Draws runner/starter/sample.png, the picture `runner init` writes beside its starter spec: a
512x384 house by a lake under mountains, with shapes and colours an image-to-image model (and
the emulator) visibly changes. Run once from the repository root: python -m tests.starter_image"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

WIDTH, HEIGHT = 512, 384
SAMPLE = Path(__file__).resolve().parent.parent / "runner" / "starter" / "sample.png"


def draw() -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT))
    pen = ImageDraw.Draw(image)
    horizon = 250
    for y in range(horizon):  # sky: deep blue at the top to a pale haze at the horizon
        t = y / horizon
        pen.line([(0, y), (WIDTH, y)], fill=(int(70 + 150 * t), int(130 + 95 * t), 235))
    pen.ellipse([380, 40, 440, 100], fill=(255, 214, 90))  # sun
    pen.polygon([(0, 250), (120, 110), (230, 250)], fill=(96, 110, 140))  # far mountains
    pen.polygon([(150, 250), (300, 80), (470, 250)], fill=(80, 92, 122))
    pen.polygon(
        [(270, 126), (300, 80), (330, 126), (314, 118), (300, 128), (285, 118)], fill="white"
    )
    pen.polygon([(380, 250), (512, 150), (512, 250)], fill=(104, 120, 150))
    pen.rectangle([0, 250, WIDTH, 290], fill=(92, 150, 70))  # meadow
    for y in range(290, HEIGHT):  # lake, darker with depth
        t = (y - 290) / (HEIGHT - 290)
        pen.line(
            [(0, y), (WIDTH, y)], fill=(int(60 - 30 * t), int(120 - 50 * t), int(180 - 60 * t))
        )
    pen.rectangle([60, 200, 160, 270], fill=(200, 70, 50))  # house
    pen.polygon([(50, 204), (110, 160), (170, 204)], fill=(90, 50, 40))  # roof
    pen.rectangle([98, 236, 122, 270], fill=(70, 45, 30))  # door
    pen.rectangle([72, 214, 92, 232], fill=(250, 230, 150))  # windows
    pen.rectangle([130, 214, 150, 232], fill=(250, 230, 150))
    pen.rectangle([206, 236, 214, 272], fill=(90, 60, 35))  # tree
    pen.ellipse([186, 190, 234, 244], fill=(40, 110, 50))
    pen.polygon([(330, 320), (400, 320), (390, 334), (340, 334)], fill=(150, 90, 50))  # boat
    pen.line([(365, 320), (365, 290)], fill=(60, 40, 30), width=2)
    pen.polygon([(367, 292), (367, 318), (388, 318)], fill=(245, 245, 240))
    return image


if __name__ == "__main__":
    draw().save(SAMPLE, "PNG", optimize=True)
    print(f"{SAMPLE}: {SAMPLE.stat().st_size} bytes")
