"""Face blurring for acquisition: OpenCV's Haar cascade finds faces in the resized image, pixelation hides them.

The detector ships inside opencv-python-headless 4.x (`cv2.data.haarcascades`; the 5.x wheels have no cascades),
so nothing is downloaded at run time. Parameters were picked on the 79 COCO val2017 images of
../shared/realdata/coco-mini-val2017 at 224 px center crop, hand-labelled (15 faces of >= ~10 px in 13 images):
frontalface_alt2 on the image upscaled 3x found 6/15 faces with 8 false positives in 79 images (README,
"Face blurring"). Haar misses profiles, faces turned away or under helmets and faces below ~8 px: blurring
lowers, it does not remove, the faces in a dataset.
"""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image, ImageFilter

CASCADE = "haarcascade_frontalface_alt2.xml"  # fewest false positives of OpenCV's frontal cascades at equal recall
# Faces at the training size are small (COCO people at 224 px: 8-60 px); the cascade's window is 20 px, so the
# image is upscaled first: 3x lets it see faces from 8 px (2x: 4/15 found instead of 6/15, half the time).
UPSCALE = 3
SCALE_FACTOR = 1.2  # 1.1 doubled the time and the false positives for no more faces found
MIN_NEIGHBORS = 3
MARGIN = 0.25  # of the box's side, added on each side: the cascade's box stops at the hairline and chin
BLOCKS = 4  # the face becomes BLOCKS x BLOCKS colours: no identity survives, whatever the output size

_local = threading.local()  # CascadeClassifier is not safe to share between the decode threads


def load_detector():
    """This thread's cascade, loaded once; RuntimeError saying what to install when OpenCV cannot provide it."""
    cascade = getattr(_local, "cascade", None)
    if cascade is None:
        try:
            import cv2
        except ImportError as e:
            raise RuntimeError(
                "blur_faces needs OpenCV: pip install 'opencv-python-headless>=4,<5' (pinned in pyproject.toml)"
            ) from e
        data = getattr(cv2, "data", None)
        if data is None:
            raise RuntimeError(
                f"OpenCV {cv2.__version__} ships no Haar cascades (5.x wheels dropped cv2.data): install the 4.x pin"
            )
        cascade = cv2.CascadeClassifier(data.haarcascades + CASCADE)
        if cascade.empty():
            raise RuntimeError(f"could not load {data.haarcascades + CASCADE}: reinstall opencv-python-headless 4.x")
        _local.cascade = cascade
    return cascade


def detect_faces(img: Image.Image) -> list[tuple[int, int, int, int]]:
    """Face boxes (left, top, right, bottom) in `img`'s pixels, margin not included."""
    import cv2

    grey = np.asarray(img.convert("L"))
    big = cv2.resize(grey, None, fx=UPSCALE, fy=UPSCALE, interpolation=cv2.INTER_LINEAR)
    found = load_detector().detectMultiScale(
        cv2.equalizeHist(big), scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS, minSize=(24, 24)
    )
    return [
        (x // UPSCALE, y // UPSCALE, -(-(x + w) // UPSCALE), -(-(y + h) // UPSCALE)) for x, y, w, h in np.asarray(found)
    ]


def blur_boxes(img: Image.Image, boxes: list[tuple[int, int, int, int]]) -> Image.Image:
    """A copy of `img` with each box (grown by MARGIN) pixelated to BLOCKS x BLOCKS and smoothed."""
    out = img.copy()
    for left, top, right, bottom in boxes:
        mx, my = round((right - left) * MARGIN), round((bottom - top) * MARGIN)
        box = (max(0, left - mx), max(0, top - my), min(img.width, right + mx), min(img.height, bottom + my))
        region = out.crop(box)
        small = region.resize((BLOCKS, BLOCKS), Image.Resampling.BOX)  # the mean colour of each block
        blurred = small.resize(region.size, Image.Resampling.NEAREST)
        # smooth the block edges so the patch does not read as a face-shaped mosaic grid
        out.paste(blurred.filter(ImageFilter.GaussianBlur(max(1, region.width // (2 * BLOCKS)))), box[:2])
    return out


def blur_faces(img: Image.Image) -> tuple[Image.Image, int]:
    """(`img` with its faces blurred, faces found); `img` itself, untouched, when there are none."""
    boxes = detect_faces(img)
    return (blur_boxes(img, boxes), len(boxes)) if boxes else (img, 0)


__all__ = ["BLOCKS", "CASCADE", "MARGIN", "blur_boxes", "blur_faces", "detect_faces", "load_detector"]
