"""Image bytes -> RGB JPEG of the training size, with Pillow, refusing bombs before decoding them.

Resize modes follow img2dataset's names and geometry so users can carry their settings over:
  no           keep the decoded size
  keep_ratio   smallest side becomes `image_size`, aspect kept
  center_crop  smallest side becomes `image_size`, then the central image_size x image_size square
  border       largest side becomes `image_size`, then padded to a square with white (img2dataset's colour)
Alpha is composited onto white, as img2dataset does, so transparent logos do not turn black.

Memory: an image's decode memory is estimated from its header before anything is decoded (`decode_bytes`) and
refused above `ProcessConfig.decode_bytes_bound()` (DECODE_BYTES_PER_PIXEL x max_pixels + the resize), so the
pipeline can size its decode slots by that bound. The steps below keep every image to that estimate: each copy
made while converting releases its source, grey images stay one byte a pixel until they are small, and JPEGs
decode at a reduced scale (`draft`).
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
# Peak bytes per source pixel the decode may hold: Pillow stores RGB/RGBA/CMYK at 4 bytes a pixel, and the
# worst conversion (RGBA/CMYK -> RGB) holds source and result at once. Images whose estimate exceeds this
# (a progressive CMYK JPEG at full size, an extreme strip upscaled by the resize) are refused unread.
DECODE_BYTES_PER_PIXEL = 8
_DECODE_SLACK = 16 * 1024 * 1024  # decoder buffers, the compressed bytes, the JPEG written
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
    faces: int = 0  # faces blurred (ProcessConfig.blur_faces)


@dataclass(frozen=True, slots=True)
class ProcessConfig:
    image_size: int = 256
    resize_mode: str = "center_crop"
    jpeg_quality: int = 95
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_image_size: int = 0  # smallest original side accepted; 0 accepts all
    blur_faces: bool = False  # pixelate faces found by faces.py before encoding

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode {self.resize_mode!r} not in {RESIZE_MODES}")
        if self.image_size < 1 or not 1 <= self.jpeg_quality <= 100 or self.max_pixels < 1:
            raise ValueError("image_size >= 1, 1 <= jpeg_quality <= 100 and max_pixels >= 1 required")

    def decode_bytes_bound(self) -> int:
        """Most memory one `process_image` call may use: no image estimated above it is decoded."""
        # the resize of an image at the limit: a reduced copy within 6x the target per side, resample, result
        return self.max_pixels * DECODE_BYTES_PER_PIXEL + self.image_size**2 * 4 * 39 + _DECODE_SLACK

    def fingerprint(self) -> str:
        """Stable text of everything that changes the JPEG bytes; stored with each shard to detect changes."""
        text = f"{self.resize_mode}:{self.image_size}:q{self.jpeg_quality}:px{self.max_pixels}:min{self.min_image_size}"
        return text + ":faces" if self.blur_faces else text  # off: unchanged, so earlier shards stay complete


def _target_size(w: int, h: int, cfg: ProcessConfig) -> tuple[int, int]:
    """Size to resize to before any crop/pad (mode "no": unchanged)."""
    if cfg.resize_mode == "no":
        return w, h
    side = min(w, h) if cfg.resize_mode in ("keep_ratio", "center_crop") else max(w, h)
    scale = cfg.image_size / side
    return max(1, round(w * scale)), max(1, round(h * scale))


_WIDE_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_BAND_ROWS = 256  # rows scaled at a time: numpy temporaries stay a few MB whatever the image size


def _pixel_bytes(mode: str) -> int:
    """Bytes a pixel of `mode` takes in Pillow's storage (every multi-band mode is 4, RGB included)."""
    if Image.getmodebands(mode) > 1:
        return 4
    return 2 if mode.startswith("I;16") else 4 if mode in ("I", "F") else 1


def _scan_bytes(img: Image.Image) -> int:
    """Buffers a decoder holds beside the image: progressive JPEG keeps every DCT coefficient of the full-size
    image (2 bytes per component per pixel, whatever `draft` chose); libtiff may read a whole strip raw."""
    w, h = img.size  # call before `draft` shrinks it
    if img.format == "JPEG" and (img.info.get("progressive") or img.info.get("progression")):
        layer = getattr(img, "layer", None) or [("", 1, 1, 0)] * 4  # (id, h sampling, v sampling, table)
        full = max(c[1] for c in layer) * max(c[2] for c in layer)
        return w * h * 2 * sum(c[1] * c[2] for c in layer) // full
    if img.format == "TIFF":
        tags = getattr(img, "tag_v2", {})
        bits = tags.get(258, (8,))
        return w * h * -(-sum(bits if isinstance(bits, tuple) else (bits,)) // 8)
    return 0


def _resize_bytes(size: tuple[int, int], target: tuple[int, int], cfg: ProcessConfig) -> int:
    """Memory of the resize and re-encode: Pillow first reduces by an integer factor to within 3x of the target
    (reducing_gap), so the reduced copy is up to 36x the target, plus the resample pass and the result."""
    tw, th = target
    if cfg.resize_mode == "no":
        return tw * th * 4  # the JPEG written (and its copy out of the buffer): at most ~2 bytes a pixel each
    reduced = min(size[0] * size[1], tw * th * 36) if size[0] * size[1] > tw * th else 0
    return (reduced + tw * th * 2) * 4 + cfg.image_size**2 * 4


def decode_bytes(
    img: Image.Image, target: tuple[int, int], cfg: ProcessConfig, scan: int = 0, rotate: bool = False
) -> int:
    """Peak memory `process_image` needs for this opened (header-only, drafted) image: the largest of its
    phases. `scan` is `_scan_bytes` taken before `draft`."""
    w, h = img.size
    decoded = w * h * _pixel_bytes(img.mode)
    converted = 0 if img.mode in ("RGB", "L") and "transparency" not in img.info else w * h * 4
    phases = (
        scan + decoded,  # decoding
        2 * decoded if rotate else 0,  # EXIF transpose copies
        decoded + converted,  # converting: the source is closed once the copy exists
        (converted or decoded) + _resize_bytes((w, h), target, cfg),
    )
    return max(phases) + _DECODE_SLACK


def _composite_on_white(img: Image.Image, out_mode: str) -> Image.Image:
    """Alpha onto white by pasting through the alpha band (no second full-size RGBA copy)."""
    background = Image.new(out_mode, img.size, 255 if out_mode == "L" else (255, 255, 255))
    background.paste(img, mask=img)  # the mask is img's own alpha band
    img.close()
    return background


def _scaled_grey(img: Image.Image) -> Image.Image:
    """16/32-bit grey -> L, scaled rather than clipped (Pillow's convert("L") clips at 255: a 16-bit PNG turns
    white), a band of rows at a time so that no float copy of the whole image exists."""
    mode = img.mode
    lo, hi = (0.0, 65535.0)
    if mode in ("F", "I"):
        emin, emax = img.getextrema()
        if mode == "F" or emax > 65535:
            lo, hi = float(emin), float(emax)
    scale = 255.0 / max(hi - lo, 1e-12)
    w, h = img.size
    grey = np.empty((h, w), np.uint8)
    for top in range(0, h, _BAND_ROWS):
        band = np.asarray(img.crop((0, top, w, min(h, top + _BAND_ROWS))), dtype=np.float32)
        grey[top : top + band.shape[0]] = np.clip((band - lo) * scale, 0, 255)
    img.close()
    return Image.fromarray(grey)


def _to_rgb_or_grey(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB, or L for grey sources (made RGB once small: identical pixels, a quarter of the
    memory): alpha onto white, palette via its alpha, CMYK/YCbCr/LAB converted, 16-bit scaled. Closes `img`
    whenever it returns a copy, so the source and the result never outlive the copy."""
    mode = img.mode
    if mode in ("RGB", "L") and "transparency" not in img.info:
        return img
    if mode in _WIDE_GREY:
        return _scaled_grey(img)
    if mode in ("LA", "La") or (mode == "L" and "transparency" in img.info):
        la = img if mode == "LA" else img.convert("LA")
        if la is not img:
            img.close()
        return _composite_on_white(la, "L")
    if mode in ("RGBA", "PA", "RGBa", "P", "RGB") and (mode != "P" or "transparency" in img.info):
        rgba = img if mode == "RGBA" else img.convert("RGBA")  # P with a transparent index is really RGBA
        if rgba is not img:
            img.close()
        return _composite_on_white(rgba, "RGB")
    out = img.convert("L" if mode == "1" else "RGB")  # 1, P, CMYK (Adobe inverted handled), YCbCr, LAB, HSV
    img.close()
    return out


def _resample(img: Image.Image, size: tuple[int, int], box: tuple[float, ...] | None = None) -> Image.Image:
    # reducing_gap: cheap integer box reduction first, then an accurate filter for the rest
    return img.resize(size, Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)


def _resized_centre(img: Image.Image, target: tuple[int, int], side: int) -> Image.Image:
    """The central side x side square of `img` resized to `target`: resampled straight from the source region
    that square covers (same filter, same scale, same pixel centres as resizing the whole image and cropping),
    so the columns or rows the crop drops are never computed: a quarter of a 4:3 photo's resize, no crop copy."""
    tw, th = target
    left, top = (tw - side) // 2, (th - side) // 2
    if img.size == target:
        return img.crop((left, top, left + side, top + side))
    w, h = img.size  # products before the division: the box's far edge is exactly w (h) when the crop reaches it
    out = _resample(img, (side, side), (left * w / tw, top * h / th, (left + side) * w / tw, (top + side) * h / th))
    img.close()
    return out


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
        rotate, scan = orientation in (5, 6, 7, 8), _scan_bytes(img)
        if img.format == "JPEG" and cfg.resize_mode != "no":
            # libjpeg can decode at 1/2, 1/4, 1/8 scale for free; draft never goes below the requested size
            img.draft("RGB", (th, tw) if rotate else (tw, th))
        need, bound = decode_bytes(img, (tw, th), cfg, scan, rotate), cfg.decode_bytes_bound()
        if need > bound:
            raise ImageRejected(
                "decode_memory",
                f"{w}x{h} {img.mode} -> {tw}x{th} needs ~{need >> 20} MiB to decode and resize, "
                f"over the per-image bound of {bound >> 20} MiB (max_pixels={cfg.max_pixels})",
            )
        img.load()
        img = ImageOps.exif_transpose(img) if orientation != 1 else img
        rgb = _to_rgb_or_grey(img)
        del img
        if cfg.resize_mode == "center_crop":
            rgb = _resized_centre(rgb, (tw, th), cfg.image_size)
        elif rgb.size != (tw, th):
            big, rgb = rgb, _resample(rgb, (tw, th))
            big.close()
        if rgb.mode != "RGB":
            rgb = rgb.convert("RGB")  # grey sources: after the resize, on the small image
        if cfg.resize_mode == "border":
            canvas = Image.new("RGB", (cfg.image_size, cfg.image_size), (255, 255, 255))
            canvas.paste(rgb, ((cfg.image_size - tw) // 2, (cfg.image_size - th) // 2))
            rgb = canvas
        faces = 0
        if cfg.blur_faces:
            from metaclip_assets.acquisition.faces import blur_faces  # OpenCV loads only when asked for

            rgb, faces = blur_faces(rgb)
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
    return ProcessedImage(out.getvalue(), rgb.width, rgb.height, ow, oh, fmt, digest, faces)
