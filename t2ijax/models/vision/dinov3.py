"""DINOv3 ViT (transformers' DINOv3ViTModel) as a Flax tower.

No position table: patch tokens are rotated by 2D RoPE whose coordinates are the patch centres
scaled to [-1, 1] on whatever grid the input has, so any multiple of the patch size is read
without resampling (the training-time jitter of those coordinates is not used at inference).
Tokens are [class, registers, patches]; `encode` returns the class and patch tokens after the
final LayerNorm (`x_norm_patchtokens` in DINO's code), `__call__` the class token.
"""
import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2ijax.errors import ConfigError
from t2ijax.models.vision.vit import ACTIVATIONS, ViTConfig, ViTEncoder, dino_params, layer_norm, patch_embedding
from t2ijax.models.vision.weights import TorchTensors, check_shapes, read_weights

MEAN = (0.485, 0.456, 0.406)  # ImageNet, as DINOv3's image processor
STD = (0.229, 0.224, 0.225)
MODEL_TYPE = "dinov3_vit"
_LAYER_NAMES = {"norm1": "norm1", "query": "attention.q_proj", "key": "attention.k_proj",
                "value": "attention.v_proj", "out": "attention.o_proj", "norm2": "norm2", "mlp_in": "mlp.up_proj",
                "mlp_gate": "mlp.gate_proj", "mlp_out": "mlp.down_proj", "layer_scale1": "layer_scale1.lambda1",
                "layer_scale2": "layer_scale2.lambda1"}


@dataclasses.dataclass(frozen=True)
class Dinov3Config:
    encoder: ViTConfig
    image_size: int  # the checkpoint's training size; only used to build example inputs
    patch_size: int
    rope_theta: float
    num_register_tokens: int = 0

    @classmethod
    def from_dict(cls, config: dict) -> "Dinov3Config":
        if config.get("model_type") != MODEL_TYPE:
            raise ConfigError(f"DINOv3 config.json has model_type {config.get('model_type')!r}; expected "
                              f"'{MODEL_TYPE}' (the ConvNeXt variants are not supported)")
        sizes = [config.get(key, 0) for key in ("patch_size", "image_size")]
        if any(not isinstance(size, int) for size in sizes):
            raise ConfigError(f"DINOv3 config.json has patch_size/image_size {sizes}; only square ones are supported")
        if config.get("hidden_act", "gelu") not in ACTIVATIONS:
            raise ConfigError(f"DINOv3 hidden_act {config['hidden_act']!r} is not one of: {', '.join(ACTIVATIONS)}")
        d, heads = config["hidden_size"], config["num_attention_heads"]
        if (d // heads) % 4:
            raise ConfigError(f"DINOv3 head dim {d // heads} is not a multiple of 4, which its 2D RoPE needs")
        encoder = ViTConfig(hidden_size=d, num_layers=config["num_hidden_layers"], num_heads=heads,
                            mlp_size=config["intermediate_size"], activation=config.get("hidden_act", "gelu"),
                            layer_norm_eps=config.get("layer_norm_eps", 1e-5), layer_scale=True,
                            query_bias=config.get("query_bias", True), key_bias=config.get("key_bias", False),
                            value_bias=config.get("value_bias", True), out_bias=config.get("proj_bias", True),
                            mlp_bias=config.get("mlp_bias", True), gated_mlp=config.get("use_gated_mlp", False))
        return cls(encoder, config.get("image_size", 224), config["patch_size"], config.get("rope_theta", 100.0),
                   config.get("num_register_tokens", 0))


def patch_rope(height: int, width: int, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """(cos, sin) [height * width, head_dim / 2] of the row-major patches: the first half of the
    angles follows the row coordinate, the second the column, both patch centres in [-1, 1]."""
    inv_freq = 1.0 / theta ** np.arange(0, 1, 4 / head_dim, dtype=np.float32)
    rows, cols = (2.0 * (np.arange(n, dtype=np.float32) + 0.5) / n - 1.0 for n in (height, width))
    coords = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2)
    angles = (2 * math.pi * coords[:, :, None] * inv_freq).reshape(height * width, -1).astype(np.float32)
    return jnp.cos(angles), jnp.sin(angles)


class Dinov3(nn.Module):
    """Normalised pixels [B, H, W, 3] (multiples of the patch size) -> class token [B, D] (`encode`: and patches)."""

    config: Dinov3Config

    @nn.compact
    def encode(self, pixels: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(class token [B, D], patch tokens [B, H / patch, W / patch, D]), both after the final LayerNorm."""
        cfg, d = self.config, self.config.encoder.hidden_size
        patches = patch_embedding(d, cfg.patch_size, use_bias=True)(pixels)
        batch, height, width, _ = patches.shape
        token_init = nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed"))
        prefix = [self.param("cls_token", token_init, (1, d))]
        if cfg.num_register_tokens:
            prefix.append(self.param("register_tokens", token_init, (cfg.num_register_tokens, d)))
        prefix = jnp.broadcast_to(jnp.concatenate(prefix), (batch, 1 + cfg.num_register_tokens, d))
        tokens = jnp.concatenate([prefix, patches.reshape(batch, -1, d)], axis=1)
        rope = patch_rope(height, width, cfg.encoder.head_dim, cfg.rope_theta)
        hidden = ViTEncoder(cfg.encoder, name="encoder")(tokens, rope)
        hidden = layer_norm(cfg.encoder.layer_norm_eps, "norm")(hidden)
        return hidden[:, 0], hidden[:, 1 + cfg.num_register_tokens:].reshape(batch, height, width, d)

    def __call__(self, pixels: jax.Array) -> jax.Array:
        return self.encode(pixels)[0]


def dinov3_params(tensors: TorchTensors, config: Dinov3Config) -> dict:
    """Maps transformers DINOv3ViTModel tensor names onto `Dinov3` (the unused mask token is skipped).
    Saved checkpoints name the layers `layer.N`, the module's own state dict `model.layer.N`."""
    tensors = TorchTensors({k.removeprefix("model."): v for k, v in tensors.tensors.items()}, tensors.model)
    params = dino_params(tensors, config, "layer.", _LAYER_NAMES, "embeddings.patch_embeddings", "norm")
    check_shapes(params, Dinov3(config), jnp.zeros((1, config.patch_size, config.patch_size, 3)))
    return params


def load_dinov3(path) -> tuple[Dinov3, dict]:
    """The tower and its float32 parameters from a local Hugging Face DINOv3 ViT directory."""
    config_dict, tensors = read_weights(path, "DINOv3")
    config = Dinov3Config.from_dict(config_dict)
    return Dinov3(config), dinov3_params(TorchTensors(tensors, "DINOv3"), config)
