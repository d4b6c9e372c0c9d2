"""Dagster definitions: thin wiring around the plain modules in ``metaclip_assets.curation``."""
