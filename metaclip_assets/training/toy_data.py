"""Toy webdataset shards with a learnable signal: coloured shapes named in the caption.

Same layout as the acquisition stage writes (`<key>.jpg`, `<key>.txt`, `<key>.json` per sample), so tests, the
CPU smoke benchmark and demos exercise the real reading path. A CLIP model can only lower its loss by learning
to match colour and shape words to pixels.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import webdataset as wds
from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 220, 40),
    "purple": (140, 40, 180),
    "orange": (245, 140, 20),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle")
TEMPLATES = ("a photo of a {c} {s}", "a {c} {s}", "{c} {s} on a plain background", "an image of a {c} {s}")


def toy_image(colour: str, shape: str, rng: random.Random, size: int) -> Image.Image:
    grey = rng.randint(90, 160)
    img = Image.new("RGB", (size, size), (grey, grey, grey))
    draw = ImageDraw.Draw(img)
    r = rng.randint(size // 4, size * 2 // 5)
    cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
    fill = tuple(min(255, max(0, v + rng.randint(-15, 15))) for v in COLOURS[colour])
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return img


def make_toy_shards(
    out_dir: str | Path,
    n_shards: int = 2,
    per_shard: int = 128,
    size: int = 32,
    seed: int = 0,
    colours: tuple[str, ...] | None = None,
) -> list[str]:
    """Write n_shards tar files into out_dir; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    names = tuple(colours or COLOURS)
    paths = []
    for shard in range(n_shards):
        path = out / f"{shard:06d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for i in range(per_shard):
                colour, shape = rng.choice(names), rng.choice(SHAPES)
                buf = io.BytesIO()
                toy_image(colour, shape, rng, size).save(buf, format="JPEG", quality=90)
                caption = rng.choice(TEMPLATES).format(c=colour, s=shape)
                sink.write(
                    {
                        "__key__": f"{seed:04d}{shard:04d}{i:06d}",
                        "jpg": buf.getvalue(),
                        "txt": caption,
                        "json": json.dumps({"colour": colour, "shape": shape, "width": size, "height": size}),
                    }
                )
        paths.append(str(path))
    return paths
