"""Dagster wiring only: assets, asset checks, partitions, resources, the launcher (local subprocess / Kubernetes pod)
and automation. Each asset reads its inputs through `layout`/`storage`, makes one call into a plain module, and turns
the plain result into `MaterializeResult` / `AssetCheckResult`. The only package that imports Dagster."""
