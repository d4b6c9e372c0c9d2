"""The sample's images: one recognisable 64x64 drawing per class (randomised enough that a model must
generalise), the image WARC the acquisition stage replays, and the held-out zero-shot eval split.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from metaclip_assets import layout
from metaclip_assets.sample import warc_writer as W
from metaclip_assets.sample.texts import CLASSES, TEMPLATES


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=75, optimize=True)
    return buf.getvalue()


def draw_image(cls: str | None, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """A 64x64 picture of `cls` (None: a decorative logo) with random colours, placement, scale and noise."""

    def jitter(rgb, amount=25):
        return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)

    bg = jitter((225, 225, 215), 30)
    if cls == "bird":
        bg = jitter((140, 190, 235))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    s = float(rng.uniform(0.75, 1.15)) * size / 64
    cx, cy = size / 2 + rng.uniform(-7, 7), size / 2 + rng.uniform(-7, 7)

    def box(dx0, dy0, dx1, dy1):
        return [cx + dx0 * s, cy + dy0 * s, cx + dx1 * s, cy + dy1 * s]

    def pts(*xy):
        return [(cx + x * s, cy + y * s) for x, y in xy]

    if cls == "apple":
        d.ellipse(box(-15, -13, 15, 16), fill=jitter((200, 30, 35)) if rng.random() < 0.75 else jitter((110, 190, 50)))
        d.rectangle(box(-1.5, -20, 1.5, -11), fill=(100, 60, 20))
        d.ellipse(box(2, -20, 12, -14), fill=jitter((60, 150, 40)))
    elif cls == "bird":
        body = jitter((90, 70, 60), 40)
        d.ellipse(box(-14, -6, 10, 10), fill=body)
        d.ellipse(box(4, -14, 18, 0), fill=body)
        d.polygon(pts((17, -8), (26, -5), (17, -3)), fill=(240, 160, 30))
        d.polygon(pts((-14, 0), (-26, -8), (-24, 6)), fill=body)
    elif cls == "boat":
        d.rectangle([0, cy + 8 * s, size, size], fill=jitter((40, 90, 170)))
        d.polygon(pts((-22, 4), (22, 4), (15, 14), (-15, 14)), fill=jitter((120, 70, 30)))
        d.line(pts((0, 4), (0, -24)), fill=(60, 40, 20), width=2)
        d.polygon(pts((2, -22), (2, 2), (18, 2)), fill=(250, 250, 250))
    elif cls == "car":
        paint = jitter(tuple(int(c) for c in rng.integers(30, 230, 3)), 0)
        d.rectangle(box(-24, -4, 24, 8), fill=paint)
        d.polygon(pts((-14, -4), (-8, -14), (10, -14), (16, -4)), fill=paint)
        d.rectangle(box(-6, -12, 8, -5), fill=(180, 220, 240))
        for x in (-14, 14):
            d.ellipse(box(x - 6, 4, x + 6, 16), fill=(20, 20, 20))
    elif cls == "cat":
        fur = jitter((230, 140, 50)) if rng.random() < 0.5 else jitter((130, 130, 130))
        d.polygon(pts((-16, -6), (-14, -24), (-4, -12)), fill=fur)
        d.polygon(pts((16, -6), (14, -24), (4, -12)), fill=fur)
        d.ellipse(box(-17, -15, 17, 17), fill=fur)
        for x in (-7, 7):
            d.ellipse(box(x - 3, -4, x + 3, 2), fill=(60, 170, 60))
    elif cls == "clock":
        d.ellipse(box(-20, -20, 20, 20), fill=(250, 250, 245), outline=(20, 20, 20), width=3)
        a = rng.uniform(0, 2 * np.pi)
        d.line(pts((0, 0), (11 * np.cos(a), 11 * np.sin(a))), fill=(0, 0, 0), width=3)
        d.line(pts((0, 0), (0, -16)), fill=(0, 0, 0), width=2)
    elif cls == "dog":
        fur = jitter((140, 95, 50), 35)
        d.ellipse(box(-14, -16, 14, 16), fill=fur)
        for x in (-18, 10):
            d.ellipse(box(x, -14, x + 8, 8), fill=jitter((80, 50, 25), 15))
        d.ellipse(box(-5, 5, 5, 12), fill=(15, 15, 15))
    elif cls == "flower":
        d.line(pts((0, 0), (0, 28)), fill=(40, 140, 40), width=3)
        petal = jitter((230, 80, 160), 50)
        for k in range(6):
            a = k * np.pi / 3
            px, py = 10 * np.cos(a), 10 * np.sin(a)
            d.ellipse(box(px - 7, py - 7, px + 7, py + 7), fill=petal)
        d.ellipse(box(-6, -6, 6, 6), fill=(250, 210, 40))
    elif cls == "house":
        d.rectangle(box(-18, -4, 18, 20), fill=jitter((220, 200, 160)))
        d.polygon(pts((-23, -4), (0, -24), (23, -4)), fill=jitter((170, 40, 30)))
        d.rectangle(box(-4, 6, 5, 20), fill=(90, 55, 30))
        d.rectangle(box(8, 2, 15, 9), fill=(150, 200, 240))
    elif cls == "tree":
        d.rectangle(box(-4, 4, 4, 26), fill=(110, 70, 35))
        d.ellipse(box(-20, -26, 20, 10), fill=jitter((40, 140, 50)))
    else:  # decorative logo: flat tile with bars, no class
        d.rounded_rectangle(box(-24, -14, 24, 14), radius=6, fill=jitter((60, 60, 160), 60))
        for y in (-6, 2):
            d.rectangle(box(-16, y, 16, y + 4), fill=(250, 250, 250))
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 4, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def write_image_warc(
    root: Path,
    snapshot: str,
    image_classes: dict[str, str | None],
    rng: np.random.Generator,
    ids: W.RecordIds,
    when: datetime,
) -> dict:
    """Image WARC for ~90% of the referenced URLs; the rest missing, one corrupt, one HTTP 404."""
    urls = list(image_classes)  # insertion order = generation order (deterministic)
    present = rng.random(len(urls)) >= 0.1
    out_dir = root / layout.image_warc_dir(snapshot)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "images.warc.gz"
    info_id = ids()
    fields = [
        ("isPartOf", f"{snapshot}-images"),
        ("software", "metaclip-assets sample generator"),
        ("format", "WARC File Format 1.1"),
    ]
    chunks = [W.warcinfo_member(name, W.iso_date(when), info_id, fields, wat=False)]
    missing, corrupt, http_error = [], [], []
    for i, url in enumerate(urls):
        if not present[i]:
            missing.append(url)
            continue
        cls = image_classes[url]
        data = jpeg(draw_image(cls, rng))
        status, ctype = "200 OK", "image/jpeg"
        if len(corrupt) == 0 and i > len(urls) // 2 and cls:
            data = data[: len(data) // 3]  # a truncated download
            corrupt.append(url)
        elif len(http_error) == 0 and i > len(urls) // 3 and cls:
            data, status, ctype = b"<html><body>Not Found</body></html>", "404 Not Found", "text/html"
            http_error.append(url)
        head = W.http_head(
            f"HTTP/1.1 {status}",
            [
                ("Date", W.http_date(when)),
                ("Content-Type", ctype),
                ("Content-Length", str(len(data))),
                ("Cache-Control", "max-age=31536000"),
                ("ETag", f'"{hashlib.md5(data).hexdigest()[:16]}"'),
            ],
        )
        block = head.encode() + data
        date = W.iso_date(when + timedelta(seconds=i))
        headers = W.capture_headers(
            "response",
            url,
            date,
            ids(),
            block,
            content_type="application/http; msgtype=response",
            payload=data,
            warcinfo_id=info_id,
            payload_type=ctype,
        )
        chunks.append(W.warc_member(headers, block))
    W.write_members(out_dir / name, chunks)
    return {
        "path": f"{layout.image_warc_dir(snapshot)}/{name}",
        "referenced": len(urls),
        "records": len(urls) - len(missing),
        "missing": missing,
        "corrupt": corrupt,
        "http_error": http_error,
    }


def write_eval(root: Path, snapshot: str, rng: np.random.Generator, per_class: int) -> dict:
    """The zero-shot eval split: `per_class` drawings per class, class names and prompt templates."""
    out = root / layout.eval_set_dir(snapshot)
    for cls in CLASSES:
        (out / cls).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            (out / cls / f"{snapshot}-{cls}-{k:04d}.jpg").write_bytes(jpeg(draw_image(cls, rng)))
    (out / "classnames.json").write_text(json.dumps(list(CLASSES), indent=1) + "\n")
    (out / "templates.json").write_text(json.dumps(list(TEMPLATES), indent=1) + "\n")
    return {
        "path": layout.eval_set_dir(snapshot),
        "per_class": per_class,
        "classes": list(CLASSES),
        "templates": list(TEMPLATES),
    }
