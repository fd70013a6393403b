"""A config's denoiser, optimizer and sharded train state on random inputs of config.bench's shapes:
what the train, sample and compile suites time, with no dataset, text encoder or autoencoder."""
import dataclasses

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from t2ijax import sharding
from t2ijax.config import validate
from t2ijax.diffusion.timesteps import time_shift
from t2ijax.errors import ConfigError
from t2ijax.models.build import build_model, num_image_tokens
from t2ijax.techniques import ema
from t2ijax.techniques.frozen import needs_images
from t2ijax.training import state as train_state
from t2ijax.training.optim import run_optimizer
from t2ijax.training.step import lower_train_step, zero_caption


@dataclasses.dataclass
class Synthetic:
    config: ml_collections.ConfigDict
    model: nn.Module
    mesh: jax.sharding.Mesh
    rules: tuple
    state: train_state.TrainState  # arrays, or abstract ones (synthetic(..., materialize=False))
    example: dict[str, jax.ShapeDtypeStruct]  # the model's inputs for one example (train_state.example_inputs)
    batch: dict[str, jax.Array]  # x0 [B, S, S, C], text [B, L, D], text_mask [B, L]: standard normal, all valid
    shift: float

    @property
    def batch_size(self) -> int:
        return self.batch["x0"].shape[0]

    @property
    def image_tokens(self) -> int:
        return num_image_tokens(self.config.model, *self.batch["x0"].shape[1:3])

    @property
    def negative_prompt(self) -> tuple[jax.Array, jax.Array]:
        """The negative prompt's embeddings and mask: the zero caption the train step drops captions to."""
        return zero_caption(*self.batch["text"].shape[1:])

    def lowered_train_step(self, model: nn.Module | None = None) -> jax.stages.Lowered:
        """The jitted train step lowered for this batch, and this state or, for another `model` (e.g.
        model.clone(scan_layers=False): XLA's cost analysis counts a loop body once), its abstract state."""
        state = self.state
        if model is not None:
            optimizer, _ = run_optimizer(self.config)
            state = train_state.abstract(model, optimizer, self.example, self.mesh, self.rules,
                                         ema.enabled(self.config.ema))
        return lower_train_step(self.config, model or self.model, state, self.batch, self.shift, self.mesh,
                                self.rules)


def check(config: ml_collections.ConfigDict) -> None:
    """The problems that would otherwise surface after minutes of compiling, as one line. The suites call it
    once, before building anything."""
    if needs_images(config):
        raise ConfigError("the bench times the denoiser alone, on random latents: turn off repa.weight, "
                          "perceptual.dino_weight and perceptual.lpips_weight")
    validate(config, jax.device_count(), jax.process_count(), jax.default_backend())
    b = config.bench
    if b.latent_size % config.model.patch_size:
        raise ConfigError(f"bench.latent_size={b.latent_size} is not a multiple of model.patch_size="
                          f"{config.model.patch_size}")
    if b.batch_size % sharding.batch_ways(sharding.run_mesh(config)):
        raise ConfigError(f"bench.batch_size={b.batch_size} does not split over the mesh's data x fsdp devices; "
                          "give a multiple of them")


def bench_model(config: ml_collections.ConfigDict) -> nn.Module:
    """The config's denoiser for config.bench's inputs, its attention picked for the bench's token count
    (models.build.attention_for otherwise looks at the training sizes)."""
    b = config.bench
    return build_model(config, b.latent_channels, b.text_dim,
                       image_tokens=[num_image_tokens(config.model, b.latent_size, b.latent_size)])


def synthetic(config: ml_collections.ConfigDict, materialize: bool = True) -> Synthetic:
    """The model, state and random batch of an already check()ed config; `materialize` False leaves the
    state abstract (enough to lower and compile)."""
    b = config.bench
    mesh = sharding.run_mesh(config)
    rules = sharding.logical_rules(config.sharding_rules)
    model = bench_model(config)
    optimizer, _ = run_optimizer(config)
    example = train_state.example_inputs(1, b.latent_size, b.latent_channels, b.text_length, b.text_dim)
    with_ema = ema.enabled(config.ema)
    if materialize:
        state, _ = train_state.create(config.seed, model, optimizer, example, mesh, rules, with_ema)
    else:
        state = train_state.abstract(model, optimizer, example, mesh, rules, with_ema)
    rows = b.batch_size // jax.process_count()  # this host's share of the global batch
    rng = np.random.default_rng((config.seed, jax.process_index()))
    local = {"x0": rng.standard_normal((rows, b.latent_size, b.latent_size, b.latent_channels), np.float32),
             "text": rng.standard_normal((rows, b.text_length, b.text_dim), np.float32),
             "text_mask": np.ones((rows, b.text_length), bool)}
    batch = sharding.global_batch(local, sharding.batch_sharding(mesh))
    shift = time_shift(config.diffusion, num_image_tokens(config.model, b.latent_size, b.latent_size))
    return Synthetic(config, model, mesh, rules, state, example, batch, shift)
