"""Webdataset tar shards written atomically, with names safe on any filesystem.

A shard is built under a hidden temporary name (".<name>.tar.<pid>-<rand>.tmp") and renamed to its final
name only once closed and fsynced, so a killed run leaves at most a temp file that no reader's glob
("*.tar", "{00000..00009}.tar") matches, never a half shard. Tar members carry fixed metadata (mtime 0,
no owner) so the same samples always give the same bytes: re-runs are byte-identical and diffable.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import tarfile
from pathlib import Path
from typing import Any

import orjson
import polars as pl

# the file-name rules are path facts, kept in layout.py; re-exported here for the acquisition package
from metaclip_assets.layout import safe_component, shard_prefix  # noqa: F401

_UUID = re.compile(r"[0-9a-f]{24}\Z")


def shard_stem(snapshot: str, shard: int, n: int) -> str:
    return f"{shard_prefix(snapshot, shard)}-{n:05d}"


def sample_key(image_uuid: str, text_index: int) -> str:
    """24 hex digits of the image id + the text's index among that image's texts: unique, sortable, safe."""
    if not _UUID.match(image_uuid):
        raise ValueError(f"image_uuid {image_uuid!r} is not 24 lowercase hex digits")
    return f"{image_uuid}_{text_index:03d}"


def temp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


_N5 = "[0-9]" * 5  # the shard number in a glob: exact, so snapshot "A" never matches files of snapshot "A-000"


def shard_files(out_dir: Path, prefix: str, suffix: str) -> list[Path]:
    """Files `<prefix>-NNNNN<suffix>` of this (snapshot, shard) and no other."""
    return sorted(out_dir.glob(f"{prefix}-{_N5}{suffix}"))


def stale_temps(out_dir: Path, prefix: str) -> list[Path]:
    """Temp files a killed run of this (snapshot, shard) left behind."""
    return sorted({*out_dir.glob(f".{prefix}-{_N5}.*.tmp"), *out_dir.glob(f".{prefix}.*.tmp")})


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened; rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: Path, final: Path) -> None:
    """Durably move a finished temp file to its final name (atomic on POSIX and Windows)."""
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def write_parquet_atomic(frame: pl.DataFrame, final: Path) -> None:
    tmp = temp_path(final)
    try:
        frame.write_parquet(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        commit(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sample_json(meta: dict[str, Any]) -> bytes:
    return orjson.dumps(meta, option=orjson.OPT_SORT_KEYS)


class ShardWriter:
    """`with ShardWriter(path) as w: w.add(...)`: committed on a clean exit, temp file removed on an exception."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.tmp = temp_path(final)
        self._file = open(self.tmp, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)
        self.count = 0

    def add_member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        info.uname = info.gname = ""
        self._tar.addfile(info, io.BytesIO(data))

    def add(self, key: str, jpg: bytes, txt: str, meta: dict[str, Any]) -> None:
        # jpg first: webdataset groups consecutive members by key, the order inside a sample is free
        self.add_member(f"{key}.jpg", jpg)
        self.add_member(f"{key}.txt", txt.encode("utf-8"))
        self.add_member(f"{key}.json", sample_json(meta))
        self.count += 1

    def close(self) -> None:
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        commit(self.tmp, self.final)

    def abort(self) -> None:
        try:
            self._tar.close()
        except Exception:  # already broken: the file is being thrown away anyway
            pass
        self._file.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read_members(path: Path) -> dict[str, bytes]:
    """All members of a shard by name (used to carry kept samples over when a shard is rebuilt)."""
    with tarfile.open(path, "r") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
