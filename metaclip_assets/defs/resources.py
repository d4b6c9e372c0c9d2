"""Where the pipeline keeps its files: one storage root (local directory or object-store URL)."""

import dagster as dg
from pydantic import Field

from metaclip_assets import layout, settings
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
        return Storage(self.crawl_root or layout.crawl_root(self.data_root))
