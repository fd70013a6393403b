"""The denoiser named by config.model, and the image sizes it takes."""
import jax.numpy as jnp
import ml_collections

from t2ijax.errors import ConfigError
from t2ijax.models.autoencoders import geometry
from t2ijax.registry import Registry

MODELS = Registry("model.name")


def _common(config: ml_collections.ConfigDict, in_channels: int, context_dim: int, techniques: dict,
            attention_impl: str) -> dict:
    """The module fields every backbone takes, from the run config."""
    m = config.model
    return dict(in_channels=in_channels, patch_size=m.patch_size, context_in_dim=context_dim, hidden_size=m.hidden_size,
                mlp_ratio=m.mlp_ratio, num_heads=m.num_heads, depth=m.depth, dtype=jnp.dtype(m.dtype),
                param_dtype=jnp.dtype(m.param_dtype), remat_policy=m.remat_policy, scan_layers=m.scan_layers,
                attention_impl=attention_impl, **techniques)


@MODELS.register("prx")
def _prx(config: ml_collections.ConfigDict, **common):
    from t2ijax.models.prx import PRX

    m = config.model
    return PRX(theta=m.theta, axes_dim=tuple(m.axes_dim) or None, time_factor=m.time_factor,
               time_max_period=m.time_max_period, bottleneck_size=m.bottleneck_size or None,
               resolution_embeds=m.resolution_cond == "vec", resolution_tokens=m.resolution_cond == "tokens",
               pos_embed=m.pos_embed, pos_grid=position_grid(config), **common)


@MODELS.register("dit_cross")
def _dit_cross(config: ml_collections.ConfigDict, **common):
    from t2ijax.models.dit_cross import DiTCross

    sample_size = position_grid(config) * config.model.patch_size
    return DiTCross(sample_size=sample_size, interpolation_scale=pixart_interpolation(sample_size), **common)


def pixart_interpolation(sample_size: int) -> float:
    """diffusers' PixArt default interpolation_scale: the position table's stretch for sample sizes over 64."""
    return float(max(sample_size // 64, 1))


@MODELS.register("mmdit")
def _mmdit(config: ml_collections.ConfigDict, **common):
    from t2ijax.models.mmdit import MMDiT

    m, grid = config.model, position_grid(config)
    return MMDiT(qk_norm=m.qk_norm, pooled_projection_dim=common["context_in_dim"], sample_size=grid * m.patch_size,
                 pos_embed_max_size=m.pos_embed_max_size or max(2 * grid, *largest_grid(config)), **common)


@MODELS.register("flux")
def _flux(config: ml_collections.ConfigDict, **common):
    from t2ijax.models.flux import Flux

    m = config.model
    return Flux(double_blocks=m.double_blocks or -(-m.depth // 3), theta=m.theta, guidance_embeds=m.guidance_embeds,
                axes_dim=tuple(m.axes_dim) or flux_axes(m.hidden_size // m.num_heads),
                pooled_projection_dim=common["context_in_dim"], **common)


def flux_axes(head_dim: int) -> tuple[int, int, int]:
    """Flux.1's RoPE split (16, 56, 56) of 128 at any head size: an eighth for the first id axis (0 for every
    token here), the rest halved between rows and columns, each even."""
    first = 2 * round(head_dim / 16)
    rows = (head_dim - first) // 4 * 2
    return first, rows, head_dim - first - rows


@MODELS.register("uvit")
def _uvit(config: ml_collections.ConfigDict, **common):
    from t2ijax.models.uvit import UViT

    return UViT(text_len=config.text_encoder.max_length, final_conv=config.model.final_conv,
                pos_grid=position_grid(config), **common)


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

    attention = attention_for(config, jax.default_backend(), image_tokens)
    return MODELS.get(config.model.name)(config, **_common(config, in_channels, context_dim, techniques, attention))


def position_grid(config: ml_collections.ConfigDict) -> int:
    """config.model.pos_grid, or when 0 the token grid side of a config.data.resolution square."""
    if config.model.pos_grid:
        return config.model.pos_grid
    return config.data.resolution // geometry(config.autoencoder.name)[1] // config.model.patch_size


def largest_grid(config: ml_collections.ConfigDict) -> tuple[int, int]:
    """The largest token grid rows and columns over the run's training sizes."""
    from t2ijax.training.phases import training_sizes

    downsample, p = geometry(config.autoencoder.name)[1], config.model.patch_size
    sizes = training_sizes(config)
    return max(h for h, _ in sizes) // downsample // p, max(w for _, w in sizes) // downsample // p


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


# Backbones whose attention queries hold the whole sequence, not the image tokens alone: the tokens it has
# beyond the image and the text (U-ViT's time token).
JOINT_SEQUENCE = {"mmdit": 0, "flux": 0, "uvit": 1}


def query_lengths(cfg: ml_collections.ConfigDict, image_tokens: int) -> tuple[int, ...]:
    """The query lengths of the backbone's attentions at `image_tokens` image tokens: those alone (PRX's image
    queries over text and image keys, PixArt's self- and cross-attention), or with the text (and U-ViT's time
    token) where text and image attend jointly; MMDiT's last block has image queries only."""
    if cfg.model.name not in JOINT_SEQUENCE:
        return (image_tokens,)
    joint = image_tokens + cfg.text_encoder.max_length + JOINT_SEQUENCE[cfg.model.name]
    return (joint, image_tokens) if cfg.model.name == "mmdit" else (joint,)


def splash_misfit(cfg: ml_collections.ConfigDict) -> tuple[int, int, int] | None:
    """(height, width, query tokens) of a training size whose attention splash cannot tile, or None."""
    from t2ijax.training.phases import training_sizes

    _, downsample = geometry(cfg.autoencoder.name)
    for height, width in training_sizes(cfg):
        for tokens in query_lengths(cfg, num_image_tokens(cfg.model, height // downsample, width // downsample)):
            if tokens % 128:
                return height, width, tokens
    return None


def attention_for(cfg: ml_collections.ConfigDict, platform: str, image_tokens: list[int] | None = None) -> str:
    """config.model.attention_impl with 'auto' resolved for `platform` (jax.default_backend()): splash on
    TPUs when every attention's query length tiles by 128 (at `image_tokens`, by default the training sizes'),
    cuDNN's fused kernel on GPUs in bfloat16 (it takes no float32), the key-tiled flash attention on CPUs
    (faster there than the einsums, docs/benchmarks.md), XLA's einsums otherwise."""
    impl = cfg.model.attention_impl
    if impl != "auto":
        return impl
    if image_tokens is None:
        tiles = splash_misfit(cfg) is None
    else:
        tiles = all(length % 128 == 0 for n in image_tokens for length in query_lengths(cfg, n))
    if platform == "tpu" and tiles:
        return "splash"
    if platform == "gpu" and cfg.model.dtype == "bfloat16":
        return "cudnn"
    return "flash" if platform == "cpu" else "xla"
