"""Drawn test images of the kinds users save besides photographs, made with Pillow alone (so the
same everywhere): text with flat shapes, and a line chart. `python -m tests.drawn DIR` writes
them as PNGs (the ones in tests/data/screen were made so)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def text_and_shapes(width: int = 800, height: int = 600) -> Image.Image:
    """Lines of text in a few colours and sizes, with rectangles, ellipses and lines, on white."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    rng = np.random.default_rng(7)
    words = "the quick brown fox jumps over lazy dog pillow image lossless codec band tool".split()
    colours = [(0, 0, 0), (30, 60, 160), (170, 20, 20), (20, 120, 40)]
    y = 10
    while y < height - 30:
        size = int(rng.choice([12, 14, 18, 24]))
        font = ImageFont.load_default(size)
        line = " ".join(rng.choice(words, size=int(rng.integers(4, 12))))
        draw.text((int(rng.integers(5, 60)), y), line, fill=colours[int(rng.integers(len(colours)))], font=font)
        y += size + 8
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width - 120)), int(rng.integers(0, height - 80))
        box = (x0, y0, x0 + int(rng.integers(30, 120)), y0 + int(rng.integers(20, 80)))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = int(rng.integers(3))
        if shape == 0:
            draw.rectangle(box, fill=fill, outline=(0, 0, 0))
        elif shape == 1:
            draw.ellipse(box, fill=fill)
        else:
            draw.line(box, fill=fill, width=3)
    return img


def line_chart(width: int = 800, height: int = 600) -> Image.Image:
    """Five curves with axes, grid lines and labels on white."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(14)
    left, top, right, bottom = 60, 20, width - 20, height - 40
    for i in range(11):
        x = left + i * (right - left) // 10
        y = top + i * (bottom - top) // 10
        draw.line((x, top, x, bottom), fill=(225, 225, 225))
        draw.line((left, y, right, y), fill=(225, 225, 225))
        draw.text((x - 8, bottom + 8), f"{i * 10}", fill="black", font=font)
        draw.text((10, y - 8), f"{100 - i * 10}", fill="black", font=font)
    draw.rectangle((left, top, right, bottom), outline="black")
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
    for k, colour in enumerate(colours):
        points = []
        for i in range(101):
            x = left + i * (right - left) / 100
            v = 0.5 + 0.4 * math.sin(i / (6 + 3 * k) + k) * math.exp(-i / (150 + 40 * k))
            points.append((x, top + (1 - v) * (bottom - top)))
        draw.line(points, fill=colour, width=2)
        draw.text((right - 120, top + 10 + 18 * k), f"series {k + 1}", fill=colour, font=font)
    return img


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    text_and_shapes().save(out / "drawn-text-and-shapes.png")
    line_chart().save(out / "drawn-line-chart.png")
