"""The pure training step `(state, batch) -> (state, metrics)` and held-out loss."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from t2ijax import nonfinite, sharding
from t2ijax.diffusion.losses import training_loss, velocity_mse
from t2ijax.diffusion.timesteps import sample_timesteps
from t2ijax.techniques import ema
from t2ijax.train_state import TrainState


def drop_captions(rng, text, text_mask, null_text, null_mask, rate: float):
    """Replaces each example's caption by the empty caption with probability `rate`."""
    drop = jax.random.uniform(rng, (text.shape[0],)) < rate
    text = jnp.where(drop[:, None, None], null_text[None], text)
    text_mask = jnp.where(drop[:, None], null_mask[None], text_mask)
    return text, text_mask


def make_train_step(model: nn.Module, optimizer: optax.GradientTransformation, schedule: optax.Schedule,
                    config: ml_collections.ConfigDict, null_text: jax.Array, null_mask: jax.Array, shift: float):
    """Builds the step. Batches hold x0 [B, H, W, C] (model space), text [B, L, D], text_mask [B, L];
    `shift` is the training time shift (timesteps.time_shift).

    Randomness is fold_in(state.rng, state.step): a function of the seed and step alone. A step
    whose loss or gradient norm is not finite is flagged, and under config.nonfinite.policy='skip'
    leaves params, optimizer state and EMA as they were (t2ijax/nonfinite.py).
    """
    diffusion = config.diffusion

    def loss_fn(params, batch, rng):
        x0 = batch["x0"]
        t_rng, noise_rng, drop_rng = jax.random.split(rng, 3)
        t = sample_timesteps(t_rng, x0.shape[0], diffusion, shift)
        eps = jax.random.normal(noise_rng, x0.shape, x0.dtype)
        text, text_mask = drop_captions(drop_rng, batch["text"].astype(jnp.float32), batch["text_mask"],
                                        null_text, null_mask, config.data.caption_dropout)
        predict = lambda x_t, t: model.apply({"params": params}, x_t, t, text, text_mask)
        return jnp.mean(training_loss(predict, x0, eps, t, diffusion))

    def train_step(state: TrainState, batch):
        rng = jax.random.fold_in(state.rng, state.step)
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, rng)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "learning_rate": schedule(state.step)}
        finite = nonfinite.is_finite(metrics)
        metrics["nonfinite"] = ~finite
        params = optax.apply_updates(state.params, updates)
        ema_params = None if state.ema_params is None else ema.update(state.ema_params, params, state.step + 1,
                                                                      config.ema)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params)
        if config.nonfinite.policy == "skip":  # a non-finite step moves only the step counter (the data position)
            new_state = nonfinite.keep_if(finite, new_state, state.replace(step=state.step + 1))
        return new_state, metrics

    return train_step


def jit_train_step(train_step, state_shardings, mesh: jax.sharding.Mesh):
    """The step jitted over `mesh`: state in its shardings (the old one donated), batch split over
    data x fsdp, metrics replicated."""
    return jax.jit(train_step, in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
                   out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=0)


def make_heldout_loss(model: nn.Module, diffusion: ml_collections.ConfigDict):
    """(params, batch, t, eps) -> per-example velocity MSE at the given times and noise, no caption
    dropout: the flow-matching loss, on one scale whatever the prediction and loss weighting."""

    def heldout_loss(params, batch, t, eps):
        text = batch["text"].astype(jnp.float32)
        predict = lambda x_t, t: model.apply({"params": params}, x_t, t, text, batch["text_mask"])
        return velocity_mse(predict, batch["x0"], eps, t, diffusion)

    return heldout_loss
