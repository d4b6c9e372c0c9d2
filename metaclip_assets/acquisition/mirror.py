"""One acquisition shard's files on any data root: built in a local folder, mirrored to an object store.

`acquire` (pipeline.py) needs a POSIX folder: temp files renamed into place, sidecars read back on resume, tars
re-read when a retry rebuilds one. An object store (s3://, gs://, ...) has no rename, but a PUT of a finished file is
atomic: the object appears whole or not at all. So on a URL data root this (snapshot, shard)'s files are first copied
from the store into a local folder (what resume reads), `acquire` runs there, and each file it commits is uploaded
whole, in the pipeline's commit order: a chunk's old sidecar (its completion marker) is deleted before its tar is
replaced and the new sidecar is uploaded after the tar, so the store never shows a complete-looking chunk with a
stale tar; the shard's index and failure table go last. `push` runs after every chunk (through `acquire`'s progress
callback), so a killed pod loses at most the chunk in flight. Local disk needed: this one shard's tars, under TMPDIR.

On a local data root the folder is the data root's own and `push` does nothing.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from metaclip_assets import layout
from metaclip_assets.storage import Storage

Signature = tuple[int, int, int]  # (inode, size, mtime_ns): an os.replace'd file gets a new inode


def _signature(path: Path) -> Signature:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _rank(name: str) -> int:
    """Upload order: tars, then their sidecars (completion markers), then the shard's index and failure table."""
    return 0 if name.endswith(".tar") else 1 if name.endswith(".samples.parquet") else 2


class ShardMirror:
    """The files `<prefix>-NNNNN.*` and `<prefix>.*` of one (snapshot, shard) in the snapshot's shards folder."""

    def __init__(self, storage: Storage, snapshot: str, shard: int, local_root: Path | None = None) -> None:
        self.storage = storage
        self.key = layout.shards_dir(snapshot)
        self.prefix = layout.shard_prefix(snapshot, shard)
        self._mine = re.compile(rf"{re.escape(self.prefix)}(-[0-9]{{5}})?\.[^/]+\Z")
        # the local folder, and a Storage over it with the data root's keys (for readers that need local files)
        if not storage.is_local and local_root is None:
            raise ValueError(f"{storage!r} is not local: give the local folder to build the shard in (local_root)")
        self.view = storage if storage.is_local else Storage(local_root)
        self.dir = self.view.local_path(self.key)
        self._synced: dict[str, Signature] = {}  # name -> local signature when the store last matched it

    @property
    def remote(self) -> bool:
        return not self.storage.is_local

    def owns(self, name: str) -> bool:
        return bool(self._mine.match(name))

    def _local(self) -> dict[str, Signature]:
        if not self.dir.is_dir():
            return {}
        return {p.name: _signature(p) for p in self.dir.iterdir() if self.owns(p.name) and p.is_file()}

    def listing(self) -> dict[str, int]:
        """{name: bytes} of this shard's objects in the store, listed afresh."""
        fs, base = self.storage.fs, self.storage.path(self.key)
        fs.invalidate_cache(base)  # another process (an earlier run, another pod) may have written since
        if not fs.exists(base):
            return {}
        entries = fs.ls(base, detail=True)
        return {
            name: int(info["size"])
            for info in entries
            if info["type"] == "file" and self.owns(name := info["name"].rsplit("/", 1)[-1])
        }

    def pull(self) -> int:
        """Copy this shard's objects into the local folder (what resume reads); returns how many."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.remote:
            return 0
        names = self.listing()
        for name in names:
            tmp = self.dir / f".{name}.{os.getpid()}.download"  # hidden and not owned: never read half-copied
            self.storage.fs.get_file(self.storage.path(f"{self.key}/{name}"), str(tmp))
            os.replace(tmp, self.dir / name)
        self._synced = self._local()
        return len(names)

    def push(self) -> int:
        """Bring the store up to the local folder, in commit order; returns the objects written or deleted."""
        if not self.remote:
            return 0
        local = self._local()
        changed = sorted((n for n, sig in local.items() if self._synced.get(n) != sig), key=lambda n: (_rank(n), n))
        gone = sorted(self._synced.keys() - local.keys())
        if not changed and not gone:
            return 0
        fs = self.storage.fs
        touched = {n.split(".", 1)[0] for n in (*changed, *gone)}
        for name in sorted(self._synced):  # a rebuilt chunk is incomplete in the store until its new sidecar lands
            if name.endswith(".samples.parquet") and name.split(".", 1)[0] in touched:
                fs.rm_file(self.storage.path(f"{self.key}/{name}"))
                del self._synced[name]
        for name in changed:
            fs.put_file(str(self.dir / name), self.storage.path(f"{self.key}/{name}"))  # one PUT: whole or absent
            self._synced[name] = local[name]
        for name in gone:
            if name in self._synced:
                fs.rm_file(self.storage.path(f"{self.key}/{name}"))
                del self._synced[name]
        return len(changed) + len(gone)

    def verify(self) -> None:
        """The store holds exactly the local folder's files of this shard, byte counts equal."""
        if not self.remote:
            return
        want = {n: sig[1] for n, sig in self._local().items()}
        got = self.listing()
        if got != want:
            wrong = sorted(n for n in want.keys() | got.keys() if want.get(n) != got.get(n))
            raise RuntimeError(
                f"{self.storage.uri(self.key)} does not match the shard just written ({wrong[:5]}, "
                f"{len(wrong)} files differ): another writer on the same shard? Materialize the shard again"
            )

    def pushing(self, report: Callable[[Mapping[str, int], float], None]) -> Callable[[Mapping[str, int], float], None]:
        """`acquire`'s progress callback (called after every chunk) that uploads what the chunk committed first."""

        def progress(counts: Mapping[str, int], rate: float) -> None:
            self.push()
            report(counts, rate)

        return progress

    @classmethod
    @contextmanager
    def open(cls, storage: Storage, snapshot: str, shard: int) -> Iterator[ShardMirror]:
        """The shard's folder, pulled from the store (URL roots) and removed on exit; whatever was committed when
        the body fails is still pushed, so a retry resumes from it."""
        if storage.is_local:
            yield cls(storage, snapshot, shard)
            return
        with tempfile.TemporaryDirectory(prefix="metaclip-acquire-") as tmp:
            mirror = cls(storage, snapshot, shard, Path(tmp))
            mirror.pull()
            try:
                yield mirror
            except BaseException:
                try:
                    mirror.push()
                except Exception:  # noqa: BLE001 - the body's error is the one to report
                    pass
                raise
            mirror.push()
            mirror.verify()
