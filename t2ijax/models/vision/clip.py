"""The CLIP image tower with its projection (transformers' CLIPVisionModelWithProjection).

`image_embeds` of transformers equals `ClipVisionTower(...)(pixels)`: patch embedding, class
token and learned positions, pre-LayerNorm, the encoder, post-LayerNorm on the class token,
then the bias-free projection. Pixels are NHWC, already normalised with CLIP's mean and std.
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2ijax.errors import ConfigError
from t2ijax.models.vision.vit import (ViTConfig, ViTEncoder, layer_norm, patch_embedding, stack_layers,
                                      torch_layer_params)
from t2ijax.models.vision.weights import TorchTensors, check_shapes, read_weights

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
_LAYER_NAMES = {"norm1": "layer_norm1", "query": "self_attn.q_proj", "key": "self_attn.k_proj",
                "value": "self_attn.v_proj", "out": "self_attn.out_proj", "norm2": "layer_norm2",
                "mlp_in": "mlp.fc1", "mlp_out": "mlp.fc2"}


@dataclasses.dataclass(frozen=True)
class ClipVisionConfig:
    encoder: ViTConfig
    image_size: int
    patch_size: int
    projection_dim: int

    @classmethod
    def from_dict(cls, config: dict) -> "ClipVisionConfig":
        """From the config.json of a CLIPModel (nested vision_config) or of a vision tower alone."""
        vision = config.get("vision_config", config)
        try:
            encoder = ViTConfig(hidden_size=vision["hidden_size"], num_layers=vision["num_hidden_layers"],
                                num_heads=vision["num_attention_heads"], mlp_size=vision["intermediate_size"],
                                activation=vision.get("hidden_act", "quick_gelu"),
                                layer_norm_eps=vision.get("layer_norm_eps", 1e-5), layer_scale=False)
            return cls(encoder, vision["image_size"], vision["patch_size"], config["projection_dim"])
        except KeyError as missing:
            raise ConfigError(f"CLIP config.json has no {missing}; expected a CLIPModel or "
                              "CLIPVisionModelWithProjection directory") from None


class ClipVisionTower(nn.Module):
    """Normalised pixels [B, S, S, 3] (S = config.image_size) -> image embeddings [B, projection_dim]."""

    config: ClipVisionConfig

    @nn.compact
    def __call__(self, pixels: jax.Array) -> jax.Array:
        cfg, d = self.config, self.config.encoder.hidden_size
        patches = patch_embedding(d, cfg.patch_size, use_bias=False)(pixels)
        patches = patches.reshape(patches.shape[0], -1, d)
        class_token = self.param("class_embedding", nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                                                 ("embed",)), (d,))
        positions = self.param("position_embedding", nn.with_logical_partitioning(
            nn.initializers.normal(0.02), (None, "embed")), (patches.shape[1] + 1, d))
        tokens = jnp.concatenate([jnp.broadcast_to(class_token, (patches.shape[0], 1, d)), patches], axis=1)
        hidden = layer_norm(cfg.encoder.layer_norm_eps, "pre_norm")(tokens + positions)
        hidden = ViTEncoder(cfg.encoder, name="encoder")(hidden)
        pooled = layer_norm(cfg.encoder.layer_norm_eps, "post_norm")(hidden[:, 0])
        projection = nn.Dense(cfg.projection_dim, use_bias=False, precision=jax.lax.Precision.HIGHEST,
                              kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                                       ("embed", None)), name="projection")
        return projection(pooled)


def clip_vision_params(tensors: TorchTensors, config: ClipVisionConfig) -> dict:
    """Maps transformers CLIP tensor names (with or without the text tower) onto `ClipVisionTower`."""
    d = config.encoder.hidden_size
    layers = [torch_layer_params(tensors, f"vision_model.encoder.layers.{i}.", _LAYER_NAMES, config.encoder)
              for i in range(config.encoder.num_layers)]
    params = {
        "patch_embedding": tensors.conv("vision_model.embeddings.patch_embedding", bias=False),
        "class_embedding": tensors.take("vision_model.embeddings.class_embedding"),
        "position_embedding": tensors.take("vision_model.embeddings.position_embedding.weight"),
        "pre_norm": tensors.layer_norm("vision_model.pre_layrnorm"),
        "encoder": {"layers": stack_layers(layers)},
        "post_norm": tensors.layer_norm("vision_model.post_layernorm"),
        "projection": tensors.linear("visual_projection", (d, config.projection_dim), None),
    }
    module = ClipVisionTower(config)
    check_shapes(params, module, jnp.zeros((1, config.image_size, config.image_size, 3)))
    return params


def load_clip_vision(path) -> tuple[ClipVisionTower, dict]:
    """The tower and its float32 parameters from a local Hugging Face CLIP directory."""
    config_dict, tensors = read_weights(path, "CLIP")
    config = ClipVisionConfig.from_dict(config_dict)
    return ClipVisionTower(config), clip_vision_params(TorchTensors(tensors, "CLIP"), config)
