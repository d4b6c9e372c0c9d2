"""What the `clip_checkpoint` asset asks the training process to do (its TrainConfig fields, with paths under the
data root as the process sees it, the snapshots before this one and the checkpoint to warm-start from), and which
training of a snapshot is the current one.

Versions: a training runs in `training/<experiment>/<model>/<snapshot>/<version>/` (layout.training_run_dir), where
the version hashes what determines its result (`plan_training`): the training config without its operational
fields, the curated shards it reads and the version of the checkpoint it warm-starts from, so a change upstream in
time gives every later snapshot a new version. After a run succeeds the asset writes its record (`run.json`) into
that dir and copies it to the snapshot's pointer `latest.json`; readers (the next snapshot's warm start, evaluation,
export) resolve a snapshot's checkpoint through the pointer (`resolve_checkpoint`). No run overwrites another's
checkpoint, and a version that was trained already is not trained again.

Called by the assets in the Dagster process, reading through `Storage`; plain Python, no Dagster.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from metaclip_assets import layout, settings
from metaclip_assets.training.config import TrainConfig

if TYPE_CHECKING:  # the Dagster process passes one in; the training image (no fsspec, no polars) never imports it
    from metaclip_assets.storage import Storage

# What the asset trains when its config leaves a field out: TrainConfig's recipe with a budget that suits the CPU
# sample in seconds (TrainConfig's own batch_size 256 and samples_budget 1,000,000 are for a run started by hand).
ASSET_DEFAULTS = TrainConfig(snapshot="", output_dir="", batch_size=64, samples_budget=6_400)

# The asset's Dagster code_version, also hashed into every run version: bump it when a change to the trainer changes
# what the same config and data train into, so that every snapshot trains again (and shows as stale until then).
TRAINING_CODE_VERSION = "1"
# The version of a checkpoint in the layout before versions: final.pt in the snapshot dir itself, no pointer.
UNVERSIONED = "unversioned"
VERSION_CHARS = 12  # hex digits of a run version: a folder name, short enough to read in the UI


def checkpoint_path(data_root: str, experiment: str, model: str, snapshot: str, version: str | None = None) -> str:
    """Where the training of (experiment, model) on `snapshot` writes its final.pt (version None: the layout before
    versions)."""
    return f"{data_root.rstrip('/')}/{layout.training_checkpoint_key(experiment, model, snapshot, version)}"


def earlier_snapshots(snapshot: str, registered: list[str]) -> list[str]:
    return sorted(s for s in registered if s < snapshot)  # snapshot ids sort in time order (CC-MAIN-YYYY-WW)


def train_config_for(
    recipe: Mapping[str, Any],
    snapshot: str,
    registered: list[str],
    data_root: str,
    *,
    version: str | None = None,
    warm_start_key: str | None = None,
) -> dict:
    """The training process's config: `recipe` (the asset's config fields) plus paths as the process sees them,
    the snapshots before this one and the warm start (the previous snapshot's final.pt, unless from scratch).

    The asset passes the run `version` and the previous snapshot's checkpoint as resolved through its pointer
    (`plan_training`); without them (a run planned by hand, no storage to read) the layout before versions."""
    root = data_root.rstrip("/")
    experiment, model = recipe["experiment"], recipe["model"]
    earlier = earlier_snapshots(snapshot, registered)
    warm = None
    if earlier and recipe["strategy"] != "from_scratch":
        warm = f"{root}/{warm_start_key or layout.training_checkpoint_key(experiment, model, earlier[-1])}"
    return {
        **{k: v for k, v in recipe.items() if k != "shard_root"},
        "snapshot": snapshot,
        "earlier_snapshots": earlier,
        "shard_root": recipe.get("shard_root") or f"{root}/{layout.SHARDS_DIR}",
        "output_dir": f"{root}/{layout.training_run_dir(experiment, model, snapshot, version)}",
        "warm_start_from": warm,
        "data_root": data_root,
        "data_card_paths": [
            f"{root}/{layout.datacard_key(snapshot, settings.num_shards(), settings.num_buckets(), name)}"
            for name in ("datacard.json", "summary.json")
        ],
    }


# ---- which checkpoint is a snapshot's -------------------------------------------------------------------------
@dataclass(frozen=True)
class Resolved:
    """A snapshot's current checkpoint: its key under the data root, its run version and its run record."""

    snapshot: str
    key: str
    version: str
    record: dict


def read_record(storage: Storage, key: str) -> dict | None:
    return storage.read_json(key) if storage.exists(key) else None


def resolve_checkpoint(storage: Storage, experiment: str, model: str, snapshot: str) -> Resolved | None:
    """The checkpoint the snapshot's pointer names; None if the snapshot was not trained (with this experiment and
    model). Without a pointer, a final.pt in the snapshot dir itself is a training from before versioned dirs
    (which wrote no pointer) and is read as is, with the version `UNVERSIONED`."""
    pointer_key = layout.training_pointer_key(experiment, model, snapshot)
    pointer = read_record(storage, pointer_key)
    if pointer is not None:
        if not storage.exists(pointer["checkpoint"]):
            raise FileNotFoundError(
                f"{storage.uri(pointer_key)} names {storage.uri(pointer['checkpoint'])}, which is missing: "
                f"materialize clip_checkpoint for {snapshot} again (it re-trains that version)"
            )
        return Resolved(snapshot, pointer["checkpoint"], pointer["version"], pointer)
    unversioned = layout.training_checkpoint_key(experiment, model, snapshot)
    if storage.exists(unversioned):
        return Resolved(snapshot, unversioned, UNVERSIONED, {})
    return None


def require_checkpoint(storage: Storage, experiment: str, model: str, snapshot: str) -> Resolved:
    found = resolve_checkpoint(storage, experiment, model, snapshot)
    if found is None:
        raise FileNotFoundError(
            f"no trained {model} checkpoint (experiment {experiment!r}) for {snapshot}: "
            f"{storage.uri(layout.training_pointer_key(experiment, model, snapshot))} does not exist. "
            f"Materialize clip_checkpoint for {snapshot} first, with the same model and experiment."
        )
    return found


def resolve_checkpoints(storage: Storage, experiment: str, model: str, snapshots: list[str]) -> dict[str, str]:
    """{snapshot: checkpoint key} of the snapshots that were trained (the TiC-CLIP matrix skips the others)."""
    found = {s: resolve_checkpoint(storage, experiment, model, s) for s in snapshots}
    return {s: r.key for s, r in found.items() if r is not None}


# ---- what a run version hashes --------------------------------------------------------------------------------
def shard_location(storage: Storage, shard_root: str | None, data_root: str) -> tuple[Storage, str]:
    """(storage, key prefix) under which this process lists `<shard_root>/<snapshot>/*.tar`: the data root's shards
    by default; a configured shard root is named as the training process sees it, so one under that process's data
    root is read through `storage`, any other as its own root."""
    if not shard_root:
        return storage, layout.SHARDS_DIR
    root = data_root.rstrip("/")
    if shard_root.rstrip("/") == root or shard_root.startswith(f"{root}/"):
        return storage, shard_root[len(root) :].strip("/")
    from metaclip_assets.storage import Storage  # here: the module is imported by the Dagster process only

    return Storage(shard_root), ""


def shard_files(storage: Storage, prefix: str) -> list[list]:
    """[name, bytes, modified] of the tar files directly under `prefix`, by name."""
    base = storage.path(prefix).rstrip("/")
    if not storage.fs.exists(base):
        return []
    out = []
    for info in storage.fs.ls(base, detail=True):
        name = info["name"].rsplit("/", 1)[-1]
        if info["type"] == "file" and name.endswith(".tar") and not name.startswith("."):
            # local: mtime; s3: LastModified; gcs: updated; else the ETag
            stamp = next((info[k] for k in ("mtime", "LastModified", "updated", "ETag", "etag") if k in info), "")
            out.append([name, int(info["size"]), str(stamp)])
    return sorted(out)


def curated_data(storage: Storage, prefix: str, snapshot: str, earlier: list[str]) -> dict:
    """The shards a training reads (this snapshot's, and the earlier ones' it may replay), summed up, with a hash of
    every tar's name, size and modification time.

    Why not the data versions Dagster records for `webdataset_shards`: that asset sets none, so Dagster gives each
    materialization a new one, and a re-run that skips its complete tars would look like new data. The listing
    changes exactly when a tar is written, and also covers shards that no Dagster run wrote (a configured
    shard_root). Earlier snapshots are included whatever the strategy: a change there re-trains, never the reverse."""
    listing = {s: shard_files(storage, f"{prefix}/{s}".strip("/")) for s in [*earlier, snapshot]}
    if not listing[snapshot]:
        raise FileNotFoundError(
            f"no shards at {storage.uri(f'{prefix}/{snapshot}'.strip('/'))}/*.tar as the Dagster process sees "
            f"them: materialize webdataset_shards for {snapshot} first, or set shard_root to a place that both "
            "this process and the training process can read"
        )
    digest = hashlib.sha256(json.dumps(listing, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "hash": digest,
        "tars": {s: len(files) for s, files in listing.items()},
        "bytes": {s: sum(f[1] for f in files) for s, files in listing.items()},
    }


def run_version(inputs: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:VERSION_CHARS]


@dataclass(frozen=True)
class TrainingPlan:
    snapshot: str
    experiment: str
    model: str
    version: str
    inputs: dict  # what the version hashes (shown in the UI and kept in the run record)
    data: dict  # curated_data: tars and bytes per snapshot
    train_config: dict  # for the training process
    warm_start: Resolved | None
    current: dict | None  # the snapshot's pointer before this run
    done: dict | None  # the record of a finished run of this very version, if there is one: nothing to train

    @property
    def checkpoint_key(self) -> str:
        return layout.training_checkpoint_key(self.experiment, self.model, self.snapshot, self.version)

    @property
    def action(self) -> str:
        """'up_to_date' (the pointer names this version), 'repoint' (this version was trained before: point at it
        again) or 'train'."""
        if self.done is None:
            return "train"
        return "up_to_date" if (self.current or {}).get("version") == self.version else "repoint"


def plan_training(
    storage: Storage, recipe: Mapping[str, Any], snapshot: str, registered: list[str], data_root: str
) -> TrainingPlan:
    """The run the asset's config asks for: its version, its config and whether it ran already. `storage` is the
    data root as this process reads it, `data_root` as the training process sees it."""
    experiment, model = recipe["experiment"], recipe["model"]
    earlier = earlier_snapshots(snapshot, registered)
    warm = None
    if earlier and recipe["strategy"] != "from_scratch":
        warm = require_checkpoint(storage, experiment, model, earlier[-1])
    data = curated_data(*shard_location(storage, recipe.get("shard_root"), data_root), snapshot, earlier)
    # TrainConfig.fingerprint leaves out the operational fields (threads, workers, logging, ...); the paths are
    # left out here (a data root seen as another mount must not re-train), the warm start counts by its version.
    identity = TrainConfig.from_dict(
        {
            **recipe,
            "snapshot": snapshot,
            "earlier_snapshots": earlier,
            "output_dir": "",
            "warm_start_from": warm.version if warm else None,
        }
    )
    inputs = {
        "code_version": TRAINING_CODE_VERSION,
        "config_fingerprint": identity.fingerprint(),
        "data_hash": data["hash"],
        "warm_start_version": warm.version if warm else None,
    }
    version = run_version(inputs)
    current = read_record(storage, layout.training_pointer_key(experiment, model, snapshot))
    done = read_record(storage, layout.training_record_key(experiment, model, snapshot, version))
    if done is not None and not storage.exists(done["checkpoint"]):
        done = None  # its checkpoint was deleted: train it again
    return TrainingPlan(
        snapshot=snapshot,
        experiment=experiment,
        model=model,
        version=version,
        inputs=inputs,
        data=data,
        train_config=train_config_for(
            recipe, snapshot, registered, data_root, version=version, warm_start_key=warm.key if warm else None
        ),
        warm_start=warm,
        current=current,
        done=done,
    )


def run_record(plan: TrainingPlan, reported: Mapping[str, Any], dagster_run_id: str | None, passed: bool) -> dict:
    """What a finished run writes beside its checkpoint and into the pointer: its inputs, its warm start and what
    the training process reported (MLflow run, loss, ...), so that a run that is not repeated can show it again."""
    warm = plan.warm_start
    return {
        "version": plan.version,
        "snapshot": plan.snapshot,
        "experiment": plan.experiment,
        "model": plan.model,
        "checkpoint": plan.checkpoint_key,
        "inputs": plan.inputs,
        "data": plan.data,
        "warm_start": None
        if warm is None
        else {
            "snapshot": warm.snapshot,
            "version": warm.version,
            "checkpoint": warm.key,
            "dagster_run_id": warm.record.get("dagster_run_id"),
        },
        "dagster_run_id": dagster_run_id,
        "checks_passed": passed,
        "reported": dict(reported),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def publish(storage: Storage, record: Mapping[str, Any]) -> None:
    """The run's record beside its checkpoint, then the snapshot's pointer (each written atomically): a reader sees
    the previous current run or this one, and only once its checkpoint is complete."""
    if not storage.exists(record["checkpoint"]):
        raise FileNotFoundError(
            f"the training reported success but {storage.uri(record['checkpoint'])} does not exist: the Dagster "
            "process and the training process must see the same data root (training_launcher.data_root)"
        )
    e, m, s, v = record["experiment"], record["model"], record["snapshot"], record["version"]
    storage.write_json(layout.training_record_key(e, m, s, v), record, indent=2)
    storage.write_json(layout.training_pointer_key(e, m, s), record, indent=2)
