from __future__ import annotations

import io

import numpy as np
import polars as pl
import pytest
from PIL import Image

from metaclip_assets.acquisition import faces
from metaclip_assets.acquisition.pipeline import acquire, face_counts
from metaclip_assets.acquisition.process import ProcessConfig, process_image
from metaclip_assets.acquisition.report import report_markdown, summarize
from metaclip_assets.acquisition.source import FetchResult
from metaclip_assets_tests.acquisition import _support as sup

pytest.importorskip("cv2", reason="face blurring needs opencv-python-headless (pyproject.toml)")

SIZE = 224
# Hand-labelled face boxes (left, top, right, bottom) in the 224 px center crop of COCO val2017 images.
KNOWN_FACES = {"000000368212.jpg": (90, 0, 150, 66), "000000229358.jpg": (80, 46, 106, 78)}


def _pixels(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"), dtype=np.float32)


def _detail(grey: np.ndarray) -> float:
    """Mean absolute difference between neighbouring pixels: edges, eyes, mouth; ~0 once pixelated and smoothed."""
    return float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean())


def _faceless_jpeg() -> bytes:
    """Gradients and stripes: structure for the cascade to look at, no face."""
    yy, xx = np.mgrid[0:300, 0:400]
    arr = np.stack([(xx * 0.6) % 256, (yy * 0.8) % 256, ((xx // 25 + yy // 25) % 2) * 200], axis=-1)
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(KNOWN_FACES))
def test_known_face_is_found_and_blurred(realdata, name):
    data = (realdata / "coco-mini-val2017" / "val2017" / name).read_bytes()
    plain = process_image(data, ProcessConfig(image_size=SIZE))
    blurred = process_image(data, ProcessConfig(image_size=SIZE, blur_faces=True))
    assert plain.faces == 0 and blurred.faces >= 1
    left, top, right, bottom = KNOWN_FACES[name]
    boxes = faces.detect_faces(Image.open(io.BytesIO(plain.jpeg)))
    assert any(b[0] < right and left < b[2] and b[1] < bottom and top < b[3] for b in boxes)  # on the face

    before, after = _pixels(plain.jpeg), _pixels(blurred.jpeg)
    # the inner face: most of its detail gone (pixelated to BLOCKS x BLOCKS, then smoothed)
    cx, cy, r = (left + right) // 2, (top + bottom) // 2, (right - left) // 4
    inner = np.s_[max(0, cy - r) : cy + r, cx - r : cx + r]
    assert _detail(after[inner]) < 0.35 * _detail(before[inner])
    # far from every box (margin included) the image is what it was, up to JPEG re-encoding noise
    keep = np.ones(before.shape, bool)
    for b in boxes:
        w, h = b[2] - b[0], b[3] - b[1]
        keep[max(0, b[1] - h) : b[3] + h, max(0, b[0] - w) : b[2] + w] = False
    assert np.abs(after[keep] - before[keep]).mean() < 1.0


def test_image_without_faces_is_byte_identical_with_blurring_on():
    data = _faceless_jpeg()
    off = process_image(data, ProcessConfig(image_size=SIZE))
    on = process_image(data, ProcessConfig(image_size=SIZE, blur_faces=True))
    assert on.faces == 0 and on.jpeg == off.jpeg


def test_fingerprint_changes_only_when_blurring_is_on():
    assert ProcessConfig().fingerprint() == "center_crop:256:q95:px89478485:min0"  # shards made before: still valid
    assert ProcessConfig(blur_faces=True).fingerprint().endswith(":faces")


def test_blur_boxes_is_irreversible_inside_and_exact_outside():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    out = np.asarray(faces.blur_boxes(img, [(20, 20, 40, 40)])).astype(int)
    src = np.asarray(img).astype(int)
    m = round(20 * faces.MARGIN)
    assert (out[: 20 - m] == src[: 20 - m]).all() and (out[:, 40 + m :] == src[:, 40 + m :]).all()
    # noise has full detail; the blurred face has a few smooth blocks' worth
    assert _detail(out[22:38, 22:38].mean(-1)) < 0.2 * _detail(src[22:38, 22:38].mean(-1))


def test_face_counts_per_distinct_image():
    index = pl.DataFrame(
        {"image_uuid": ["a", "a", "b", "c", "d"], "faces_blurred": [2, 2, 0, 1, None]},
        schema={"image_uuid": pl.Utf8, "faces_blurred": pl.Int32},
    )
    assert face_counts(index) == {"images_with_faces": 2, "faces_blurred": 3}  # a's two captions: one image


class _MemorySource:
    def __init__(self, bodies: dict[str, bytes]) -> None:
        self.bodies = bodies

    def fetch(self, url: str) -> FetchResult:
        return FetchResult(url, True, 200, "image/jpeg", self.bodies[url], "ok", 0.0)


@pytest.mark.realdata
def test_acquire_counts_faces_into_index_stats_and_report(realdata, tmp_path):
    val = realdata / "coco-mini-val2017" / "val2017"
    bodies = {f"https://example.org/{n}": (val / n).read_bytes() for n in KNOWN_FACES}
    bodies["https://example.org/plain.jpg"] = _faceless_jpeg()
    pairs = [(u, f"caption {i} of {u}") for u in bodies for i in range(2)]  # two captions per image
    result = acquire(
        sup.curated_rows(pairs), _MemorySource(bodies), tmp_path, snapshot="TEST-2024-01", image_size=SIZE,
        blur_faces=True, workers=2,
    )  # fmt: skip
    expected_faces = sum(
        process_image(b, ProcessConfig(image_size=SIZE, blur_faces=True)).faces for b in bodies.values()
    )
    assert result.ok == 6 and result.images_with_faces == 2 and result.faces_blurred == expected_faces >= 2
    assert result.as_metadata()["faces_blurred"] == expected_faces

    index = pl.read_parquet(result.index_path)
    stats = {
        **result.as_metadata(),
        "shard": 0,
        "tars": [],
        "tar_bytes": 0,
        "source": {},
        "config": {"blur_faces": True},
    }
    s = summarize("TEST-2024-01", [stats], index, pl.read_parquet(result.failures_path))
    assert (s["images_with_faces"], s["faces_blurred"]) == (2, expected_faces)
    assert f"Faces blurred: {expected_faces} in 2 image(s)." in report_markdown(s)
