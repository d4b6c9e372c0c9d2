"""One storage layer for every artifact the pipeline reads or writes.

Paths are relative keys under a root URL. The root is a local directory by default; any fsspec URL
(``s3://bucket/prefix``, ``gs://...``) works the same once the matching fsspec backend is installed, so moving
to object storage is a config change, not a code change.

Writes are atomic: a reader never sees half a file. Locally we write a temporary file next to the target and
``os.replace`` it; on object stores a single PUT is atomic already, so we upload a finished local temp file.
Written files get the permissions the umask gives (0644 under the usual 022), not mkstemp's 0600: the training pod
runs as another uid. A temp file left by a killed writer (named `.tmp-<pid>-...-<target>`) is removed by the next
write of the same target once its process is gone.

Keys never leave the root: a key with a `..` component, or one that resolves outside the root, is refused.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import polars as pl
from fsspec.implementations.local import LocalFileSystem

# Every parquet artifact (pool, matched, balanced shards): zstd level 1 writes a matched shard in ~0.6x the time of
# polars' default level for ~8% more bytes (bench/README.md); reads cost the same. Statistics for predicate pushdown.
PARQUET_OPTIONS = dict(compression="zstd", compression_level=1, statistics=True)
STALE_TEMP_S = 3600  # a temp file whose writer is not a live process here, or older than this, is a leftover


def _umask() -> int:
    """The process umask, read without changing it (os.umask can only set it) where Linux shows it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain `open()` would give a new file here (0o666 minus the umask): what atomic writers chmod
    their temp file to before renaming it."""
    return 0o666 & ~_umask()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temps(directory: Path, target_name: str) -> int:
    """Remove `.tmp-<pid>-*-<target_name>` files of writers that died (kill -9) before renaming; returns how many."""
    removed = 0
    for tmp in directory.glob(f".tmp-*-{target_name}"):
        pid = tmp.name.split("-")[1]
        try:
            dead = not pid.isdigit() or (int(pid) != os.getpid() and not _alive(int(pid)))
            # the age rule also covers a pid reused after a restart (a container's writer is often pid 1)
            if dead or time.time() - tmp.stat().st_mtime > STALE_TEMP_S:
                tmp.unlink()
                removed += 1
        except (OSError, ValueError):
            continue
    return removed


class Storage:
    def __init__(self, root: str | os.PathLike[str]):
        root = os.fspath(root)
        self.fs, path = fsspec.core.url_to_fs(root)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        # Local roots are made absolute so that paths stay valid whatever the cwd of a later process.
        self.root = str(Path(path).resolve()) if self.is_local else path.rstrip("/")
        self.root_url = root if not self.is_local else self.root

    def __repr__(self) -> str:
        return f"Storage({self.root_url!r})"

    # ---- paths ---------------------------------------------------------------------------------------
    def path(self, key: str) -> str:
        """Full path (local path or bucket path) of a relative key; ValueError for one that would leave the root."""
        clean = key.lstrip("/")
        if "\0" in clean or ".." in clean.split("/") or posixpath.normpath(f"/{clean}").startswith("/.."):
            raise ValueError(f"storage key {key!r} leaves the data root {self.root_url!r}: refused")
        return f"{self.root}/{clean}"

    def local_path(self, key: str) -> Path:
        """A real filesystem path; only for libraries that cannot read file objects."""
        if not self.is_local:
            raise RuntimeError(f"{self!r} is not local: read {key} through open()/read_*() instead")
        return Path(self.path(key))

    def uri(self, key: str) -> str:
        """What to show a user (a clickable file path locally, the object URL otherwise)."""
        if self.is_local:
            return self.path(key)
        protocol = self.fs.protocol[0] if isinstance(self.fs.protocol, tuple) else self.fs.protocol
        return f"{protocol}://{self.path(key)}"

    def exists(self, key: str) -> bool:
        return self.fs.exists(self.path(key))

    def list(self, prefix: str, suffixes: tuple[str, ...] = ()) -> list[str]:
        """Relative keys of the files directly under ``prefix``, sorted (deterministic order matters)."""
        base = self.path(prefix).rstrip("/")
        if not self.fs.exists(base):
            return []
        out = []
        for info in self.fs.ls(base, detail=True):
            if info["type"] != "file":
                continue
            name = info["name"].rsplit("/", 1)[-1]
            if name.startswith((".", "_")) or (suffixes and not name.endswith(suffixes)):
                continue
            out.append(f"{prefix.rstrip('/')}/{name}")
        return sorted(out)

    def size(self, key: str) -> int:
        return int(self.fs.size(self.path(key)))

    def delete(self, key: str) -> None:
        if self.exists(key):
            self.fs.rm(self.path(key))

    # ---- reading -------------------------------------------------------------------------------------
    def open(self, key: str, mode: str = "rb"):
        if "w" in mode or "a" in mode:
            raise ValueError("use atomic_write() for writing")
        return self.fs.open(self.path(key), mode)

    def read_bytes(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def read_parquet(self, key: str, columns: list[str] | None = None) -> pl.DataFrame:
        if self.is_local:
            return pl.read_parquet(self.path(key), columns=columns)
        with self.open(key) as f:
            return pl.read_parquet(io.BytesIO(f.read()), columns=columns)

    def read_parquet_range(
        self, key: str, column: str, lo: int, hi: int | None, columns: list[str] | None = None
    ) -> pl.DataFrame:
        """Rows with lo <= `column` < hi (hi None: no upper bound) of a uint64-keyed parquet, reading only the row
        groups whose statistics overlap the range (files sorted by `column` keep this to about one group extra)."""
        if self.is_local:  # polars prunes row groups by their statistics too, without importing pyarrow.dataset
            predicate = pl.col(column) >= pl.lit(lo, dtype=pl.UInt64)
            if hi is not None:
                predicate = predicate & (pl.col(column) < pl.lit(hi, dtype=pl.UInt64))
            frame = pl.scan_parquet(self.path(key)).filter(predicate)
            return (frame.select(columns) if columns else frame).collect()
        import pyarrow as pa
        import pyarrow.dataset as pads

        field = pads.field(column)
        expr = field >= pa.scalar(lo, pa.uint64())
        if hi is not None:
            expr = expr & (field < pa.scalar(hi, pa.uint64()))
        dataset = pads.dataset(self.path(key), filesystem=self.fs, format="parquet")
        return pl.from_arrow(dataset.to_table(filter=expr, columns=columns))

    def read_npy(self, key: str) -> np.ndarray:
        with self.open(key) as f:
            return np.load(io.BytesIO(f.read()), allow_pickle=False)

    # ---- writing (always atomic) ---------------------------------------------------------------------
    @contextmanager
    def atomic_write(self, key: str) -> Iterator[Path]:
        """Yield a local temporary path; on success it becomes ``key``, on error it is removed."""
        target = self.path(key)
        if self.is_local:
            parent = Path(target).parent
            parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(parent, Path(target).name)
            fd, tmp = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-", suffix="-" + Path(target).name, dir=parent)
        else:
            fd, tmp = tempfile.mkstemp(prefix="metaclip-upload-")
        os.close(fd)
        try:
            yield Path(tmp)
            if self.is_local:
                os.chmod(tmp, file_mode())  # mkstemp's 0600 would lock out readers with another uid
                os.replace(tmp, target)
            else:
                self.fs.put_file(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def write_bytes(self, key: str, data: bytes) -> str:
        with self.atomic_write(key) as tmp:
            tmp.write_bytes(data)
        return self.uri(key)

    def write_text(self, key: str, text: str) -> str:
        return self.write_bytes(key, text.encode("utf-8"))

    def write_json(self, key: str, obj: Any, indent: int | None = None) -> str:
        data = json.dumps(obj, ensure_ascii=False, indent=indent, sort_keys=False)
        return self.write_bytes(key, data.encode("utf-8"))

    def write_parquet(self, key: str, df: pl.DataFrame, row_group_size: int | None = None) -> str:
        with self.atomic_write(key) as tmp:
            df.write_parquet(tmp, **PARQUET_OPTIONS, row_group_size=row_group_size)
        return self.uri(key)

    def write_npy(self, key: str, array: np.ndarray) -> str:
        with self.atomic_write(key) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, array, allow_pickle=False)
        return self.uri(key)


@contextmanager
def local_files(storage: Storage, keys: list[str]) -> Iterator[list[Path]]:
    """Local paths for readers that need them; object-store files are copied to a temp dir first."""
    if storage.is_local:
        yield [storage.local_path(key) for key in keys]
        return
    with tempfile.TemporaryDirectory(prefix="metaclip-") as tmp:
        paths = []
        for key in keys:
            local = Path(tmp) / key.rsplit("/", 1)[-1]
            storage.fs.get_file(storage.path(key), str(local))
            paths.append(local)
        yield paths


def glob(storage: Storage, patterns: list[str]) -> list[str]:
    """Full paths of the files matching any of `patterns` (relative to the root), sorted."""
    found: set[str] = set()
    for pattern in patterns:
        found.update(storage.fs.glob(storage.path(pattern)))
    return sorted(found)
