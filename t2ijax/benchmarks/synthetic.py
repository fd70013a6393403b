"""A config's denoiser, optimizer and sharded train state on random inputs of config.bench's shapes:
what the train, sample and compile suites time, with no dataset, text encoder or autoencoder."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from t2ijax import sharding, train_state
from t2ijax.config import validate
from t2ijax.diffusion.timesteps import time_shift
from t2ijax.errors import ConfigError
from t2ijax.models.build import build_model, num_image_tokens
from t2ijax.optim import run_optimizer
from t2ijax.techniques import ema
from t2ijax.techniques.frozen import needs_images
from t2ijax.train_step import jit_train_step, make_train_step


@dataclasses.dataclass
class Synthetic:
    config: ml_collections.ConfigDict
    model: nn.Module
    mesh: jax.sharding.Mesh
    rules: tuple
    state: train_state.TrainState
    state_shardings: object
    example: dict[str, jax.ShapeDtypeStruct]  # the model's inputs for one example (train_state.example_inputs)
    batch: dict[str, jax.Array]  # x0 [B, S, S, C], text [B, L, D], text_mask [B, L]: standard normal, all valid
    null_text: jax.Array
    null_mask: jax.Array
    shift: float

    @property
    def batch_size(self) -> int:
        return self.batch["x0"].shape[0]

    @property
    def image_tokens(self) -> int:
        return num_image_tokens(self.config.model, *self.batch["x0"].shape[1:3])

    def lowered_train_step(self, model: nn.Module | None = None) -> jax.stages.Lowered:
        """The jitted train step lowered for this batch, and this state or, for another `model` (e.g.
        model.clone(scan_layers=False): XLA's cost analysis counts a loop body once), its abstract state."""
        optimizer, schedule = run_optimizer(self.config)
        state, shardings = self.state, self.state_shardings
        if model is not None:
            state = train_state.abstract(model, optimizer, self.example, self.mesh, self.rules,
                                         ema.enabled(self.config.ema))
            shardings = jax.tree.map(lambda x: x.sharding, state)
        step = make_train_step(model or self.model, optimizer, schedule, self.config, self.null_text, self.null_mask,
                               self.shift)
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            return jit_train_step(step, shardings, self.mesh).lower(state, self.batch, None)


def check(config: ml_collections.ConfigDict) -> None:
    """The problems that would otherwise surface after minutes of compiling, as one line."""
    if needs_images(config):
        raise ConfigError("the bench times the denoiser alone, on random latents: turn off repa.weight, "
                          "perceptual.dino_weight and perceptual.lpips_weight")
    validate(config, jax.device_count(), jax.process_count(), jax.default_backend())
    b = config.bench
    if b.latent_size % config.model.patch_size:
        raise ConfigError(f"bench.latent_size={b.latent_size} is not a multiple of model.patch_size="
                          f"{config.model.patch_size}")
    if b.batch_size % sharding.batch_ways(sharding.make_mesh(config.mesh)):
        raise ConfigError(f"bench.batch_size={b.batch_size} does not split over the mesh's data x fsdp devices; "
                          "give a multiple of them")


def synthetic(config: ml_collections.ConfigDict) -> Synthetic:
    check(config)
    b = config.bench
    mesh = sharding.make_mesh(config.mesh)
    rules = sharding.logical_rules(config.sharding_rules)
    model = build_model(config, b.latent_channels, b.text_dim)
    optimizer, _ = run_optimizer(config)
    example = train_state.example_inputs(1, b.latent_size, b.latent_channels, b.text_length, b.text_dim)
    state, state_shardings = train_state.create(config.seed, model, optimizer, example, mesh, rules,
                                                ema.enabled(config.ema))
    rows = b.batch_size // jax.process_count()  # this host's share of the global batch
    rng = np.random.default_rng((config.seed, jax.process_index()))
    local = {"x0": rng.standard_normal((rows, b.latent_size, b.latent_size, b.latent_channels), np.float32),
             "text": rng.standard_normal((rows, b.text_length, b.text_dim), np.float32),
             "text_mask": np.ones((rows, b.text_length), bool)}
    batch = sharding.global_batch(local, sharding.batch_sharding(mesh))
    shift = time_shift(config.diffusion, num_image_tokens(config.model, b.latent_size, b.latent_size))
    return Synthetic(config, model, mesh, rules, state, state_shardings, example, batch,
                     jnp.zeros((b.text_length, b.text_dim)), jnp.zeros((b.text_length,), bool), shift)
