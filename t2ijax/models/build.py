"""The denoiser named by config.model, and the image sizes it takes."""
import jax.numpy as jnp
import ml_collections

from t2ijax.errors import ConfigError
from t2ijax.models.autoencoders import geometry
from t2ijax.registry import Registry

MODELS = Registry("model.name")


@MODELS.register("prx")
def _prx(cfg: ml_collections.ConfigDict, in_channels: int, context_dim: int, pos_grid: int, techniques: dict,
         attention_impl: str):
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
        resolution_tokens=cfg.resolution_cond == "tokens",
        pos_embed=cfg.pos_embed,
        pos_grid=pos_grid,
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype),
        remat_policy=cfg.remat_policy,
        scan_layers=cfg.scan_layers,
        attention_impl=attention_impl,
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


def build_model(config: ml_collections.ConfigDict, in_channels: int, context_dim: int, teacher_dim: int = 0,
                image_tokens: list[int] | None = None):
    """The denoiser of `config` (the whole run config); `teacher_dim` sizes the REPA projector's output;
    `image_tokens`, the token counts it will run at, picks an 'auto' attention (by default the training sizes')."""
    techniques = technique_fields(config)
    if "repa_projector" in techniques:
        techniques["repa_dim"] = teacher_dim
    import jax

    return MODELS.get(config.model.name)(config.model, in_channels, context_dim, position_grid(config), techniques,
                                         attention_for(config, jax.default_backend(), image_tokens))


def position_grid(config: ml_collections.ConfigDict) -> int:
    """config.model.pos_grid, or when 0 the token grid side of a config.data.resolution square."""
    if config.model.pos_grid:
        return config.model.pos_grid
    return config.data.resolution // geometry(config.autoencoder.name)[1] // config.model.patch_size


def pixel_multiple(config: ml_collections.ConfigDict) -> int:
    """What every image side must be a multiple of, in pixels: the patch size x the autoencoder's downsampling."""
    return config.model.patch_size * geometry(config.autoencoder.name)[1]


def latent_size(config: ml_collections.ConfigDict, height: int, width: int) -> tuple[int, int]:
    """The model-space (height, width) of a height x width pixel image; a ConfigError unless it splits into
    whole patches."""
    downsample = geometry(config.autoencoder.name)[1]
    multiple = pixel_multiple(config)
    if min(height, width) < multiple or height % multiple or width % multiple:
        raise ConfigError(f"image size {height}x{width} (height x width) does not split into whole "
                          f"{config.model.patch_size}x{config.model.patch_size} patches of the autoencoder's "
                          f"{downsample}x-downsampled latents; use multiples of {multiple} pixels")
    return height // downsample, width // downsample


def num_image_tokens(cfg: ml_collections.ConfigDict, height: int, width: int) -> int:
    """Image tokens the denoiser sees for a height x width input (model space)."""
    return (height // cfg.patch_size) * (width // cfg.patch_size)


ATTENTION_PLATFORMS = {"cudnn": ("gpu", "NVIDIA GPUs"), "splash": ("tpu", "TPUs")}


def attention_mismatch(impl: str, platform: str) -> str | None:
    """Why attention `impl` cannot run on `platform` (jax.default_backend()), in one line, or None."""
    if impl in ATTENTION_PLATFORMS and platform != ATTENTION_PLATFORMS[impl][0]:
        return f"config.model.attention_impl='{impl}' runs only on {ATTENTION_PLATFORMS[impl][1]} and this " \
               f"backend is {platform}"
    return None


def splash_misfit(cfg: ml_collections.ConfigDict) -> tuple[int, int, int] | None:
    """(height, width, image tokens) of a training size whose token count splash cannot tile, or None."""
    from t2ijax.training.phases import training_sizes

    _, downsample = geometry(cfg.autoencoder.name)
    for height, width in training_sizes(cfg):
        tokens = num_image_tokens(cfg.model, height // downsample, width // downsample)
        if tokens % 128:
            return height, width, tokens
    return None


def attention_for(cfg: ml_collections.ConfigDict, platform: str, image_tokens: list[int] | None = None) -> str:
    """config.model.attention_impl with 'auto' resolved for `platform` (jax.default_backend()): splash on
    TPUs when every token count tiles by 128 (`image_tokens`, by default those of the training sizes),
    cuDNN's fused kernel on GPUs in bfloat16 (it takes no float32), XLA's einsums otherwise."""
    impl = cfg.model.attention_impl
    if impl != "auto":
        return impl
    if image_tokens is None:
        tiles = splash_misfit(cfg) is None
    else:
        tiles = all(n % 128 == 0 for n in image_tokens)
    if platform == "tpu" and tiles:
        return "splash"
    if platform == "gpu" and cfg.model.dtype == "bfloat16":
        return "cudnn"
    return "xla"
