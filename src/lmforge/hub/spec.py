"""The planner's ModelSpec for what a user typed, hub ids included: the hub's half of `lmforge plan MODEL`.

The planner (lmforge.plan) is pure: it reads a local config.json or its own catalog and imports nothing of the
hub. `model_spec` adds the hub in front of it, in this order: a local folder or config.json, a snapshot in the
local Hugging Face cache (offline: no network call and no huggingface_hub import), a catalog name or the hub id
a catalog entry mirrors, and finally a hub id org/name[@revision] whose config.json is fetched into the same
cache every command uses.
"""

from __future__ import annotations

from pathlib import Path

from lmforge.errors import NotFoundError
from lmforge.hub.download import cached_snapshot
from lmforge.hub.reference import is_hub_id, locate_model, parse_hub_id
from lmforge.plan.models import catalog_spec, close_catalog_names, resolve_model, spec_from_file
from lmforge.plan.spec import ModelSpec


def model_spec(name_or_path: str) -> ModelSpec:
    """The ModelSpec for a local path, a cached snapshot, a catalog name or a reachable hub id."""
    text = str(name_or_path).strip()
    if not is_hub_id(text) or Path(text).expanduser().exists():
        return resolve_model(text)  # a path, a catalog name, or the planner's error naming the closest ones
    repo_id, revision = parse_hub_id(text)
    cached = cached_snapshot(repo_id, revision or "main")
    if cached is not None and (cached[1] / "config.json").is_file():  # a cached snapshot wins over the catalog
        return _hub_spec(cached[1] / "config.json", text)
    spec = catalog_spec(text)
    if spec is not None:
        return spec
    try:
        folder = locate_model(text, need="config").path
    except NotFoundError as error:
        close = close_catalog_names(text)
        hint = f"; or a catalog name: did you mean {', '.join(close)}?" if close else ""
        raise NotFoundError(f"{error}{hint}") from None
    return _hub_spec(folder / "config.json", text)


def _hub_spec(config_path: Path, hub_id: str) -> ModelSpec:
    return spec_from_file(config_path, name=hub_id, hf_id=hub_id.split("@")[0])
