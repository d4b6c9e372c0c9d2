"""Training data: resampled webdataset shard streams, TiC-CLIP replay mixing, and the restricted replay buffer.

Shards are sampled with replacement (open_clip's `--dataset-resampled`): the budget is counted in samples seen,
not epochs, so the stream never ends and a resumed run just draws a fresh stream (seeded by the resume step).

Shard URLs: local paths and what webdataset opens itself (`pipe:CMD`, http(s) through curl) go to webdataset's
`gopen`; object-store URLs (`s3://`, `gs://`, `az://`, ... any fsspec protocol whose backend is installed, e.g. s3fs)
are streamed through fsspec (`open_shard`), with the same credentials and endpoint settings as the curation's
`Storage`. webdataset 0.2.86 has no s3 opener (and sends gs:// to the gsutil command), hence `tar_samples`.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
import webdataset as wds

IMAGE_EXTS = "jpg;jpeg;png;webp"
BUFFER_DIR = "replay_buffer"


GOPEN_SCHEMES = ("", "file", "pipe", "http", "https")  # opened by webdataset itself; other schemes: fsspec


def is_object_url(url: str) -> bool:
    """True for an fsspec URL such as s3://bucket/key (not a path, not `pipe:`, `file:` or http(s))."""
    scheme = urlparse(url).scheme
    return len(scheme) > 1 and scheme not in GOPEN_SCHEMES  # one letter: a Windows drive


def snapshot_shards(shard_root: str, snapshot: str) -> list[str]:
    """`<shard_root>/<snapshot>/*.tar`, sorted: local paths for a folder, URLs (s3://...) for an fsspec URL."""
    if "://" not in shard_root:
        return sorted(glob.glob(os.path.join(shard_root, snapshot, "*.tar")))
    import fsspec  # here: only object-store roots need it (it comes with open_clip's huggingface_hub)

    fs, root = fsspec.core.url_to_fs(shard_root)
    folder = f"{root.rstrip('/')}/{snapshot}"
    fs.invalidate_cache(folder)  # a listing cached earlier in this process would miss tars written since
    found = [p for p in fs.glob(f"{folder}/*.tar") if not p.rsplit("/", 1)[-1].startswith(".")]
    return sorted(fs.unstrip_protocol(p) for p in found)


def open_shard(url: str):
    """A readable binary stream of one shard: fsspec for object-store URLs, webdataset's gopen for the rest."""
    if not is_object_url(url):
        return wds.gopen(url)
    import fsspec

    return fsspec.open(url, "rb").open()


def _open_shards(src, handler=wds.reraise_exception):
    """webdataset's `url_opener` with `open_shard`: adds `stream` to each {"url": ...}; fsspec streams are closed
    once their tar has been read (gopen's pipes keep webdataset's own handling)."""
    for item in src:
        url = item["url"]
        try:
            stream = open_shard(url)
        except Exception as exn:  # noqa: BLE001 - the handler decides, as in webdataset
            exn.args = exn.args + (url,)
            if handler(exn):
                continue
            break
        try:
            yield {**item, "stream": stream}
        finally:
            if is_object_url(url):
                stream.close()


def tar_samples(src, handler=wds.reraise_exception):
    """`wds.tarfile_to_samples()` for any shard URL (see the module docstring): {"url"} items -> samples."""
    files = wds.tariterators.tar_file_expander(_open_shards(src, handler), handler=handler)
    return wds.tariterators.group_by_keys(files, handler=handler)


@dataclass
class DataPlan:
    """Which shards feed a training run, and with which weights."""

    current: list[str]
    replay: list[str] = field(default_factory=list)
    replay_weight: float = 0.0  # probability that a sample comes from `replay`
    replay_source: str = "none"  # none | earlier_shards | buffer
    buffer_samples: int = 0
    earlier_shard_counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "current_shards": len(self.current),
            "replay_shards": len(self.replay),
            "replay_weight": round(self.replay_weight, 4),
            "replay_source": self.replay_source,
            "buffer_samples": self.buffer_samples,
            "earlier_shard_counts": self.earlier_shard_counts,
        }


def plan_data(cfg, log=print) -> DataPlan:
    current = list(cfg.shard_urls) or (snapshot_shards(cfg.shard_root, cfg.snapshot) if cfg.shard_root else [])
    if not current:
        where = os.path.join(cfg.shard_root or "<shard_root unset>", cfg.snapshot, "*.tar")
        raise FileNotFoundError(
            f"no training shards for snapshot {cfg.snapshot} ({where}): materialize webdataset_shards for it first"
        )
    plan = DataPlan(current=current)
    if cfg.strategy == "sequential" or not cfg.earlier_snapshots:
        return plan
    earlier = {s: snapshot_shards(cfg.shard_root, s) if cfg.shard_root else [] for s in cfg.earlier_snapshots}
    plan.earlier_shard_counts = {s: len(v) for s, v in earlier.items()}
    for s, shards in earlier.items():
        if not shards:
            log(f"warning: no shards for earlier snapshot {s}; it is not replayed")
    if cfg.strategy == "restricted":
        buffer_dir = Path(cfg.output_dir) / BUFFER_DIR
        plan.buffer_samples = build_replay_buffer(earlier, cfg.replay_buffer_samples, buffer_dir, cfg.seed)
        plan.replay = sorted(str(p) for p in buffer_dir.glob("*.tar")) if plan.buffer_samples else []
        plan.replay_source = "buffer"
    else:  # cumulative and from_scratch: every earlier shard
        plan.replay = [s for shards in earlier.values() for s in shards]
        plan.replay_source = "earlier_shards"
    if plan.replay:
        # A set ratio upsamples the (smaller) side to it; None keeps the natural union's proportions.
        plan.replay_weight = (
            cfg.replay_ratio if cfg.replay_ratio is not None else len(plan.replay) / (len(plan.replay) + len(current))
        )
    return plan


def build_replay_buffer(earlier: dict[str, list[str]], n_samples: int, out_dir: Path, seed: int) -> int:
    """A fixed-size buffer (TiC-CLIP "restricted"): n_samples split evenly over the earlier snapshots, copied
    raw (no re-encoding) from shards picked in a seeded random order. Built once; a resumed run reuses it."""
    manifest = out_dir / "manifest.json"
    if manifest.exists():
        done = json.loads(manifest.read_text())
        if done["requested"] == n_samples and done["sources"] == sorted(earlier):
            return done["samples"]
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = [s for s in earlier if earlier[s]]
    quotas = (
        {s: n_samples // len(sources) + (i < n_samples % len(sources)) for i, s in enumerate(sources)}
        if sources
        else {}
    )
    tmp = out_dir / f".buffer-000000.tar.tmp-{os.getpid()}"
    written = 0
    with wds.TarWriter(str(tmp)) as sink:
        for snap in sources:
            shards = list(earlier[snap])
            random.Random(f"{seed}:{snap}").shuffle(shards)
            taken = 0
            for sample in wds.DataPipeline(wds.SimpleShardList(shards), tar_samples):
                if taken >= quotas[snap]:
                    break
                sink.write(
                    {
                        "__key__": f"{snap}/{sample['__key__']}".replace(".", "_"),
                        **{k: v for k, v in sample.items() if not k.startswith("__")},
                    }
                )
                taken += 1
            written += taken
    os.replace(tmp, out_dir / "buffer-000000.tar")
    manifest.write_text(json.dumps({"requested": n_samples, "samples": written, "sources": sorted(earlier)}))
    return written


class _Mix(torch.utils.data.IterableDataset):
    """Draw each sample from stream i with probability probs[i] (seeded per worker), forever."""

    def __init__(self, streams, probs, seed: int):
        super().__init__()
        self.streams, self.probs, self.seed = streams, probs, seed

    def __iter__(self):
        rng = random.Random(worker_seed(self.seed))  # per (rank, worker)
        iters = [iter(s) for s in self.streams]
        while True:
            i = rng.choices(range(len(iters)), weights=self.probs)[0] if len(iters) > 1 else 0
            yield next(iters[i])


def worker_seed(seed: int) -> int:
    """A seed for this (rank, data-loader worker): each draws its own resampled shard stream and shuffle order,
    reproducibly. webdataset 0.2.86 (the release open_clip_train pins) takes the seed as a callable evaluated in the
    worker, not as a number."""
    rank, _, worker, _ = wds.utils.pytorch_worker_info()
    return random.Random(f"{seed}:{rank}:{worker}").getrandbits(31)


def _seeded_shuffle(src, seed: int, bufsize: int):
    yield from wds.filters._shuffle(src, bufsize, min(100, bufsize), random.Random(worker_seed(seed)))


def rank_shards(urls: list[str], rank: int, world_size: int) -> list[str]:
    """This rank's share of the shards (every world_size-th), so ranks read disjoint samples. With fewer shards than
    ranks every rank reads them all and `_mine` keeps the samples whose key hashes to it (disjoint too)."""
    return urls[rank::world_size] if len(urls) >= world_size else list(urls)


def _key_rank(key: str, world_size: int) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") % world_size


def _mine(src, rank: int, world_size: int):
    for sample in src:
        if _key_rank(sample["__key__"], world_size) == rank:
            yield sample


def samples(urls: list[str], seed: int, shuffle_buffer: int, rank: int = 0, world_size: int = 1):
    """One rank's endless raw sample stream (dicts with `__key__`): its shards resampled with replacement, seeded
    per (rank, worker), shuffled."""
    split_by_key = world_size > 1 and len(urls) < world_size
    return wds.DataPipeline(
        wds.ResampledShards(
            rank_shards(urls, rank, world_size), worker_seed=functools.partial(worker_seed, seed), deterministic=True
        ),
        functools.partial(tar_samples, handler=wds.warn_and_continue),
        *([functools.partial(_mine, rank=rank, world_size=world_size)] if split_by_key else []),
        functools.partial(_seeded_shuffle, seed=seed, bufsize=shuffle_buffer),
    )


def _stream(urls: list[str], seed: int, preprocess, shuffle_buffer: int, rank: int = 0, world_size: int = 1):
    return samples(urls, seed, shuffle_buffer, rank, world_size).compose(
        wds.decode("pilrgb", handler=wds.warn_and_continue),
        wds.to_tuple(IMAGE_EXTS, "txt", handler=wds.warn_and_continue),
        wds.map_tuple(preprocess, lambda text: text),
    )


def batches(
    plan: DataPlan,
    preprocess,
    tokenizer,
    batch_size: int,
    seed: int,
    shuffle_buffer: int = 1000,
    workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
):
    """Endless iterator of (images [B,3,H,W], tokens [B,ctx]) for one rank (B = the per-rank batch); texts are
    tokenized per batch, in one call. Ranks read disjoint shards (`rank_shards`); seeds differ per rank and worker."""
    streams = [_stream(plan.current, seed, preprocess, shuffle_buffer, rank, world_size)]
    probs = [1.0]
    if plan.replay and plan.replay_weight > 0:
        streams.append(_stream(plan.replay, seed + 7919, preprocess, shuffle_buffer, rank, world_size))
        probs = [1.0 - plan.replay_weight, plan.replay_weight]

    def collate(samples):
        images, texts = zip(*samples)
        return torch.stack(images), tokenizer(list(texts))

    pipeline = wds.DataPipeline(
        _Mix(streams, probs, seed), wds.batched(batch_size, collation_fn=collate, partial=False)
    )
    if workers <= 0:
        return iter(pipeline)
    return iter(
        wds.WebLoader(pipeline, batch_size=None, num_workers=workers, persistent_workers=True, prefetch_factor=4)
    )
