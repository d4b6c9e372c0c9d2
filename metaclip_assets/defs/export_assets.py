"""Export: a per-snapshot `exported_model` asset that writes the snapshot's trained checkpoint in the formats other
tools load (export/run.py): open_clip's hub layout and a transformers CLIPModel, each with the lines to paste."""

# No `from __future__ import annotations`: dagster 1.13.27 does not resolve string annotations on `config`.
import dagster as dg
from pydantic import Field

from metaclip_assets import layout
from metaclip_assets.defs.partitions import snapshot_partitions
from metaclip_assets.defs.resources import CurationStorage
from metaclip_assets.defs.training_assets import TrainedModelChoice
from metaclip_assets.export.run import FORMATS, export_in_storage
from metaclip_assets.training.plan import require_checkpoint


class ExportConfig(TrainedModelChoice):
    """Which checkpoint (model + experiment, as clip_checkpoint was configured) and which formats."""

    formats: list[str] = Field(default=list(FORMATS), description="open_clip (hub layout) and/or hf (transformers)")


@dg.asset(
    group_name="training",
    partitions_def=snapshot_partitions,
    deps=["clip_checkpoint"],
    kinds={"pytorch", "huggingface"},
    description="The snapshot's trained model as open_clip's hub folder (local-dir:) and a transformers CLIPModel "
    "+ CLIPProcessor folder; metadata shows the lines that load each.",
)
def exported_model(context: dg.AssetExecutionContext, config: ExportConfig, curation_storage: CurationStorage):
    storage = curation_storage.storage()
    # The snapshot's current run version (its training pointer); the export folder holds that version's export.
    trained = require_checkpoint(storage, config.experiment, config.model, context.partition_key)
    results = export_in_storage(
        storage,
        trained.key,
        layout.export_dir(config.experiment, config.model, context.partition_key),
        config.formats,
    )
    metadata: dict = {
        "checkpoint": dg.MetadataValue.path(next(iter(results.values()))["checkpoint"]),
        "run_version": trained.version,
    }
    for fmt, r in results.items():
        metadata[f"{fmt}_folder"] = dg.MetadataValue.path(r["folder"])
        metadata[f"{fmt}_load"] = dg.MetadataValue.md(f"```python\n{r['usage']}\n```")
        metadata[f"{fmt}_mib"] = round(r["bytes"] / 2**20, 2)
    return dg.MaterializeResult(
        metadata=metadata, data_version=dg.DataVersion(f"{trained.version}-{'+'.join(sorted(config.formats))}")
    )


export_assets = [exported_model]
