"""Image bytes -> RGB JPEG of the training size, with Pillow, refusing bombs before decoding them.

Resize modes follow img2dataset's names and geometry so users can carry their settings over:
  no           keep the decoded size
  keep_ratio   smallest side becomes `image_size`, aspect kept
  center_crop  smallest side becomes `image_size`, then the central image_size x image_size square
  border       largest side becomes `image_size`, then padded to a square with white (img2dataset's colour)
Alpha is composited onto white, as img2dataset does, so transparent logos do not turn black.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from struct import error as struct_error

import numpy as np
from PIL import Image, ImageOps

RESIZE_MODES = ("no", "keep_ratio", "center_crop", "border")
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own MAX_IMAGE_PIXELS default (~ 9459 x 9459)
# Only the formats images on the web come in: every extra plugin is attack surface for crafted bytes.
WEB_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF", "ICO", "AVIF")
Image.init()  # registers every plugin now, so the filter below sees what this Pillow build can open
_OPEN_FORMATS = tuple(f for f in WEB_FORMATS if f in Image.OPEN)
_EXIF_ORIENTATION = 0x0112


class ImageRejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True, slots=True)
class ProcessedImage:
    jpeg: bytes
    width: int  # of the JPEG written
    height: int
    original_width: int  # as displayed (EXIF orientation applied), before any resize
    original_height: int
    original_format: str
    sha256: str  # of the original bytes: the dedup key


@dataclass(frozen=True, slots=True)
class ProcessConfig:
    image_size: int = 256
    resize_mode: str = "center_crop"
    jpeg_quality: int = 95
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_image_size: int = 0  # smallest original side accepted; 0 accepts all

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode {self.resize_mode!r} not in {RESIZE_MODES}")
        if self.image_size < 1 or not 1 <= self.jpeg_quality <= 100 or self.max_pixels < 1:
            raise ValueError("image_size >= 1, 1 <= jpeg_quality <= 100 and max_pixels >= 1 required")

    def fingerprint(self) -> str:
        """Stable text of everything that changes the JPEG bytes; stored with each shard to detect changes."""
        return f"{self.resize_mode}:{self.image_size}:q{self.jpeg_quality}:px{self.max_pixels}:min{self.min_image_size}"


def _target_size(w: int, h: int, cfg: ProcessConfig) -> tuple[int, int]:
    """Size to resize to before any crop/pad (mode "no": unchanged)."""
    if cfg.resize_mode == "no":
        return w, h
    side = min(w, h) if cfg.resize_mode in ("keep_ratio", "center_crop") else max(w, h)
    scale = cfg.image_size / side
    return max(1, round(w * scale)), max(1, round(h * scale))


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB: alpha onto white, palette via its alpha, CMYK/YCbCr/LAB converted, 16-bit scaled."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":  # palette with a transparent index is really RGBA
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # 16-bit / 32-bit grey: Pillow's convert("L") clips at 255 (a 16-bit PNG turns white), so scale instead
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = (0.0, 65535.0) if mode != "F" else (float(arr.min()), float(arr.max()))
        if mode == "I" and arr.max() > 65535:
            lo, hi = float(arr.min()), float(arr.max())
        grey = np.clip((arr - lo) * (255.0 / max(hi - lo, 1e-12)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("L", "RGB") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # 1, L, CMYK (Pillow handles Adobe inverted CMYK JPEGs), YCbCr, LAB, HSV


def process_image(data: bytes, cfg: ProcessConfig) -> ProcessedImage:
    """Decode, orient, convert, resize and re-encode; ImageRejected(reason, detail) on refusal."""
    if not data:
        raise ImageRejected("empty_body", "zero bytes")
    digest = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            # Pillow warns between MAX_IMAGE_PIXELS and 2x it and raises above; our own limit decides instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
        w, h = img.size  # from the header only: nothing is decoded yet
        fmt = img.format or ""
        if w * h > cfg.max_pixels:
            raise ImageRejected("decompression_bomb", f"{w}x{h} = {w * h} pixels > {cfg.max_pixels}")
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # animations: the first frame is the image
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        ow, oh = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
        if min(ow, oh) < cfg.min_image_size:
            raise ImageRejected("image_too_small", f"{ow}x{oh} smaller than {cfg.min_image_size}")
        tw, th = _target_size(ow, oh, cfg)
        if img.format == "JPEG" and cfg.resize_mode != "no":
            # libjpeg can decode at 1/2, 1/4, 1/8 scale for free; draft never goes below the requested size
            img.draft("RGB", (th, tw) if orientation in (5, 6, 7, 8) else (tw, th))
        img.load()
        img = ImageOps.exif_transpose(img) if orientation != 1 else img
        rgb = _to_rgb(img)
        if rgb.size != (tw, th):
            # reducing_gap: cheap integer box reduction first, then an accurate filter for the rest
            rgb = rgb.resize((tw, th), Image.Resampling.BICUBIC, reducing_gap=3.0)
        if cfg.resize_mode == "center_crop":
            left, top = (tw - cfg.image_size) // 2, (th - cfg.image_size) // 2
            rgb = rgb.crop((left, top, left + cfg.image_size, top + cfg.image_size))
        elif cfg.resize_mode == "border":
            canvas = Image.new("RGB", (cfg.image_size, cfg.image_size), (255, 255, 255))
            canvas.paste(rgb, ((cfg.image_size - tw) // 2, (cfg.image_size - th) // 2))
            rgb = canvas
        out = io.BytesIO()
        rgb.save(out, "JPEG", quality=cfg.jpeg_quality)
    except ImageRejected:
        raise
    except Image.DecompressionBombError as e:  # above 2x Pillow's global limit: raised by Image.open itself
        raise ImageRejected("decompression_bomb", str(e)) from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, struct_error) as e:
        # UnidentifiedImageError is an OSError; truncated data raises OSError; malformed headers raise the rest
        raise ImageRejected("decode_error", f"{type(e).__name__}: {e}"[:300]) from None
    except MemoryError:
        raise ImageRejected("decompression_bomb", "out of memory while decoding") from None
    return ProcessedImage(out.getvalue(), rgb.width, rgb.height, ow, oh, fmt, digest)
