"""The denoiser named by config.model."""
import jax.numpy as jnp
import ml_collections

from t2ijax.registry import Registry

MODELS = Registry("model.name")


@MODELS.register("prx")
def _prx(cfg: ml_collections.ConfigDict, in_channels: int, context_dim: int, techniques: dict):
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
        resolution_embeds=cfg.resolution_cond == "vec",
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype),
        remat_policy=cfg.remat_policy,
        scan_layers=cfg.scan_layers,
        attention_impl=cfg.attention_impl,
        **techniques,
    )


def technique_fields(config: ml_collections.ConfigDict) -> dict:
    """The denoiser's fields for token routing (config.routing) and the REPA projector (config.repa)."""
    fields = dict(routing=config.routing.method, route_start=config.routing.start, route_end=config.routing.end,
                  route_rate=config.routing.rate)
    if config.repa.weight > 0:
        fields.update(capture_layer=config.repa.layer, repa_projector=config.repa.projector,
                      repa_heads=config.repa.attention_heads)
    return fields


def build_model(config: ml_collections.ConfigDict, in_channels: int, context_dim: int, teacher_dim: int = 0):
    """The denoiser of `config` (the whole run config); `teacher_dim` sizes the REPA projector's output."""
    techniques = technique_fields(config)
    if "repa_projector" in techniques:
        techniques["repa_dim"] = teacher_dim
    return MODELS.get(config.model.name)(config.model, in_channels, context_dim, techniques)


def num_image_tokens(cfg: ml_collections.ConfigDict, resolution: int) -> int:
    """Image tokens the denoiser sees for a square input of `resolution` (model space)."""
    return (resolution // cfg.patch_size) ** 2
