"""Image acquisition as plain Python (no Dagster imports): curated pairs -> webdataset shards.

    from metaclip_assets.acquisition import HttpImageSource, WarcReplaySource, acquire

`HttpImageSource` fetches from the web (bounded, polite, SSRF-safe); `WarcReplaySource` replays image
responses from WARC files. Both implement `ImageSource.fetch(url) -> FetchResult`, which `acquire` uses. Also the
acquisition report and its checks. Must not import `training`, `evaluation`, `sample`, `defs` or Dagster.
"""

from metaclip_assets.acquisition.fetch_http import (
    DEFAULT_USER_AGENT,
    FetchRefused,
    HttpImageSource,
    forbidden_address,
    opted_out,
)
from metaclip_assets.acquisition.pipeline import INPUT_SCHEMA, SAMPLE_SCHEMA, AcquireResult, acquire
from metaclip_assets.acquisition.process import (
    RESIZE_MODES,
    ImageRejected,
    ProcessConfig,
    ProcessedImage,
    process_image,
)
from metaclip_assets.acquisition.shards import ShardWriter, sample_key, shard_prefix, shard_stem
from metaclip_assets.acquisition.source import REASONS, TRANSIENT, FetchResult, ImageSource
from metaclip_assets.acquisition.warc_replay import WarcReplaySource, canonical_url, scan_warc

__all__ = [
    "DEFAULT_USER_AGENT",
    "INPUT_SCHEMA",
    "REASONS",
    "RESIZE_MODES",
    "SAMPLE_SCHEMA",
    "TRANSIENT",
    "AcquireResult",
    "FetchRefused",
    "FetchResult",
    "HttpImageSource",
    "ImageRejected",
    "ImageSource",
    "ProcessConfig",
    "ProcessedImage",
    "ShardWriter",
    "WarcReplaySource",
    "acquire",
    "canonical_url",
    "forbidden_address",
    "opted_out",
    "process_image",
    "sample_key",
    "scan_warc",
    "shard_prefix",
    "shard_stem",
]
