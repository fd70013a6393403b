"""PRX checkpoints in diffusers format (PRXTransformer2DModel): t2ijax/interop/checkpoints.py for PRX only."""
import jax.numpy as jnp

from t2ijax import storage
from t2ijax.interop.checkpoints import from_diffusers, to_diffusers
from t2ijax.interop.prx_weights import CLASS_NAME
from t2ijax.models.prx import PRX


def prx_from_diffusers(name_or_path: str, dtype=jnp.float32, **model_overrides) -> tuple[PRX, dict]:
    """(model, params) from a diffusers PRX transformer directory, pipeline directory or hub id: from_diffusers
    for PRXTransformer2DModel only."""
    return from_diffusers(name_or_path, dtype, (CLASS_NAME,), **model_overrides)


def prx_to_diffusers(model: PRX, params: dict, path: str, max_shard_bytes: int = 5 << 30) -> storage.Path:
    """Writes `params` of `model` as a directory `PRXTransformer2DModel.from_pretrained` loads (local or gs://)."""
    return to_diffusers(model, params, path, max_shard_bytes)
