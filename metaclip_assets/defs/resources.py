"""Where the pipeline keeps its files: one storage root (local directory or object-store URL)."""

import tempfile
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from pydantic import Field

from metaclip_assets import settings
from metaclip_assets.storage import Storage


class CurationStorage(dg.ConfigurableResource):
    """Data root for every artifact, and where raw crawl files of each snapshot are found."""

    data_root: str = Field(
        default_factory=settings.data_root,
        description="Local directory or fsspec URL (s3://..., gs://...) holding every pipeline artifact.",
    )
    crawl_root: str | None = Field(
        default=None,
        description="Where <snapshot>/*.wat.gz and *.warc.gz live; defaults to <data_root>/crawl.",
    )

    def storage(self) -> Storage:
        return Storage(self.data_root)

    def crawl_storage(self) -> Storage:
        return Storage(self.crawl_root) if self.crawl_root else Storage(f"{self.data_root.rstrip('/')}/crawl")

    @staticmethod
    @contextmanager
    def local_files(storage: Storage, keys: list[str]):
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
