"""DINOv2 (transformers' Dinov2Model and Dinov2WithRegistersModel) as a Flax tower.

`__call__` gives the class token after the final LayerNorm (transformers' `pooler_output`);
`encode` also gives the patch tokens after it (DINO's `x_norm_patchtokens`, what REPA aligns to)
on the input's patch grid.
Inputs whose patch grid differs from the checkpoint's have their position embeddings
resampled bicubically, as transformers does: plain for DINOv2, antialiased for the
variant with registers, whose register tokens follow the class token and carry no position.
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2ijax.errors import ConfigError
from t2ijax.models.vision.resize import resize
from t2ijax.models.vision.vit import ViTConfig, ViTEncoder, dino_params, layer_norm, patch_embedding
from t2ijax.models.vision.weights import TorchTensors, check_shapes, read_weights

MEAN = (0.485, 0.456, 0.406)  # ImageNet
STD = (0.229, 0.224, 0.225)
MODEL_TYPES = ("dinov2", "dinov2_with_registers")
_LAYER_NAMES = {"norm1": "norm1", "query": "attention.attention.query", "key": "attention.attention.key",
                "value": "attention.attention.value", "out": "attention.output.dense", "norm2": "norm2",
                "mlp_in": "mlp.fc1", "mlp_out": "mlp.fc2", "layer_scale1": "layer_scale1.lambda1",
                "layer_scale2": "layer_scale2.lambda1"}


@dataclasses.dataclass(frozen=True)
class Dinov2Config:
    encoder: ViTConfig
    image_size: int  # of the checkpoint's position grid
    patch_size: int
    num_register_tokens: int = 0

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @classmethod
    def from_dict(cls, config: dict) -> "Dinov2Config":
        model_type = config.get("model_type")
        if model_type not in MODEL_TYPES:
            raise ConfigError(f"DINOv2 config.json has model_type {model_type!r}; expected one of {MODEL_TYPES}")
        if config.get("use_swiglu_ffn") or not config.get("qkv_bias", True):
            raise ConfigError("DINOv2 with a SwiGLU MLP or without query/key/value biases (giant) is not supported")
        d = config["hidden_size"]
        encoder = ViTConfig(hidden_size=d, num_layers=config["num_hidden_layers"],
                            num_heads=config["num_attention_heads"], mlp_size=int(d * config.get("mlp_ratio", 4)),
                            activation=config.get("hidden_act", "gelu"),
                            layer_norm_eps=config.get("layer_norm_eps", 1e-6), layer_scale=True)
        return cls(encoder, config["image_size"], config["patch_size"], config.get("num_register_tokens", 0))


class Dinov2(nn.Module):
    """Normalised pixels [B, H, W, 3] (multiples of the patch size) -> class token [B, D] (`encode`: and patches)."""

    config: Dinov2Config

    def _positions(self, height: int, width: int) -> jax.Array:
        cfg, d = self.config, self.config.encoder.hidden_size
        init = nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed"))
        table = self.param("position_embeddings", init, (cfg.grid**2 + 1, d))
        if (height, width) == (cfg.grid, cfg.grid):
            return table
        grid = table[1:].reshape(cfg.grid, cfg.grid, d)
        grid = resize(grid, (height, width), "bicubic", antialias=cfg.num_register_tokens > 0)
        return jnp.concatenate([table[:1], grid.reshape(-1, d)])

    @nn.compact
    def encode(self, pixels: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(class token [B, D], patch tokens [B, H / patch, W / patch, D]), both after the final LayerNorm."""
        cfg, d = self.config, self.config.encoder.hidden_size
        patches = patch_embedding(d, cfg.patch_size, use_bias=True)(pixels)
        batch, height, width, _ = patches.shape
        token_init = nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed"))
        class_token = self.param("cls_token", token_init, (1, d))
        tokens = jnp.concatenate([jnp.broadcast_to(class_token, (batch, 1, d)), patches.reshape(batch, -1, d)], 1)
        tokens = tokens + self._positions(height, width)
        if cfg.num_register_tokens:
            registers = self.param("register_tokens", token_init, (cfg.num_register_tokens, d))
            tokens = jnp.concatenate([tokens[:, :1], jnp.broadcast_to(registers, (batch, *registers.shape)),
                                      tokens[:, 1:]], axis=1)
        hidden = layer_norm(cfg.encoder.layer_norm_eps, "norm")(ViTEncoder(cfg.encoder, name="encoder")(tokens))
        return hidden[:, 0], hidden[:, 1 + cfg.num_register_tokens:].reshape(batch, height, width, d)

    def __call__(self, pixels: jax.Array) -> jax.Array:
        return self.encode(pixels)[0]


def dinov2_params(tensors: TorchTensors, config: Dinov2Config) -> dict:
    """Maps transformers Dinov2Model / Dinov2WithRegistersModel tensor names onto `Dinov2`."""
    tensors = TorchTensors({k.removeprefix("dinov2."): v for k, v in tensors.tensors.items()}, tensors.model)
    params = dino_params(tensors, config, "encoder.layer.", _LAYER_NAMES, "embeddings.patch_embeddings.projection",
                         "layernorm", position_embeddings=tensors.take("embeddings.position_embeddings")[0])
    check_shapes(params, Dinov2(config), jnp.zeros((1, config.image_size, config.image_size, 3)))
    return params


def load_dinov2(path) -> tuple[Dinov2, dict]:
    """The tower and its float32 parameters from a local Hugging Face DINOv2 directory."""
    config_dict, tensors = read_weights(path, "DINOv2")
    config = Dinov2Config.from_dict(config_dict)
    return Dinov2(config), dinov2_params(TorchTensors(tensors, "DINOv2"), config)
