"""The denoiser named by config.model."""
import jax.numpy as jnp
import ml_collections

from t2ijax.registry import Registry

MODELS = Registry("model.name")


@MODELS.register("prx")
def _prx(cfg: ml_collections.ConfigDict, in_channels: int, context_dim: int):
    from t2ijax.models.prx import PRX

    return PRX(
        in_channels=in_channels,
        patch_size=cfg.patch_size,
        context_in_dim=context_dim,
        hidden_size=cfg.hidden_size,
        mlp_ratio=cfg.mlp_ratio,
        num_heads=cfg.num_heads,
        depth=cfg.depth,
        theta=cfg.theta,
        axes_dim=tuple(cfg.axes_dim) or None,
        time_factor=cfg.time_factor,
        time_max_period=cfg.time_max_period,
        bottleneck_size=cfg.bottleneck_size or None,
        resolution_embeds=cfg.resolution_embeds,
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype),
        remat_policy=cfg.remat_policy,
        scan_layers=cfg.scan_layers,
        attention_impl=cfg.attention_impl,
    )


def build_model(cfg: ml_collections.ConfigDict, in_channels: int, context_dim: int):
    return MODELS.get(cfg.name)(cfg, in_channels, context_dim)


def num_image_tokens(cfg: ml_collections.ConfigDict, resolution: int) -> int:
    """Image tokens the denoiser sees for a square input of `resolution` (model space)."""
    return (resolution // cfg.patch_size) ** 2
