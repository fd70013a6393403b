"""The pure training step `(state, batch, frozen_params) -> (state, metrics)` and held-out loss."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from t2ijax import sharding
from t2ijax.training import nonfinite
from t2ijax.diffusion.losses import (clip_time, contrastive_negatives, denoising_loss, noised, velocity_mse,
                                     weighted_error, x0_estimate)
from t2ijax.diffusion.timesteps import sample_timesteps
from t2ijax.techniques import ema, perceptual, repa
from t2ijax.techniques.frozen import Frozen
from t2ijax.training.optim import run_optimizer
from t2ijax.training.state import TrainState


def _pixels(batch) -> jax.Array:
    return batch["image"].astype(jnp.float32) / 127.5 - 1.0


ROUTE_STREAM = 1  # fold_in(step rng, ROUTE_STREAM) draws the routed tokens; the other draws keep their streams


def drop_captions(rng, text, text_mask, null_text, null_mask, rate: float):
    """Replaces each example's caption, embeddings and mask together, by the empty caption's with
    probability `rate` (one draw per example)."""
    drop = jax.random.uniform(rng, (text.shape[0],)) < rate
    text = jnp.where(drop[:, None, None], null_text[None], text)
    text_mask = jnp.where(drop[:, None], null_mask[None], text_mask)
    return text, text_mask


def _microbatches(batch, count: int):
    """[B, ...] -> [count, B / count, ...], microbatch i holding examples i, i + count, ...: each device's
    rows of a batch split over devices stay on that device."""
    split = lambda x: jnp.swapaxes(x.reshape(x.shape[0] // count, count, *x.shape[1:]), 0, 1)
    return jax.tree.map(split, batch)


def make_train_step(model: nn.Module, optimizer: optax.GradientTransformation, schedule: optax.Schedule,
                    config: ml_collections.ConfigDict, null_text: jax.Array, null_mask: jax.Array, shift: float,
                    frozen: Frozen | None = None):
    """Builds the step `(state, batch, frozen_params) -> (state, metrics)`. Batches hold x0 [B, H, W, C]
    (model space), text [B, L, D], text_mask [B, L], and when a technique compares with real pixels
    (REPA, P-DINO, LPIPS) the images [B, H', W', 3] uint8; `frozen` holds those techniques' networks
    and frozen_params their params. `shift` is the training time shift (timesteps.time_shift).

    Randomness is fold_in(state.rng, state.step): a function of the seed and step alone. A step
    whose loss, gradient norm, new params, optimizer state or EMA is not finite is flagged, and under
    config.nonfinite.policy='skip' leaves params, optimizer state and EMA as they were (t2ijax/training/nonfinite.py). With
    config.optim.microbatches = k the batch is split in k and the microbatches' gradients summed, each
    term normalised by the whole batch: the randomness (t, noise, caption drops, the contrastive pairs,
    the examples below the perceptual t thresholds) is drawn for the whole batch first and split with
    it, so the update is the whole batch's to float rounding, except that token routing draws its
    tokens per microbatch (the same distribution, other tokens).
    """
    diffusion = config.diffusion
    routed = config.routing.method != "none"
    repa_on = config.repa.weight > 0
    perceptual_on = config.perceptual.dino_weight > 0 or config.perceptual.lpips_weight > 0

    def per_example_draws(batch, rng) -> dict:
        """The step's randomness for every example of the whole batch, drawn before any split into
        microbatches: t, noise, the captions after dropout, the contrastive negatives (each example's
        predecessor in the whole batch) and the perceptual losses' weights over the examples below their
        t thresholds."""
        x0, p = batch["x0"], config.perceptual
        t_rng, noise_rng, drop_rng = jax.random.split(rng, 3)
        t = clip_time(sample_timesteps(t_rng, x0.shape[0], diffusion, shift))
        eps = jax.random.normal(noise_rng, x0.shape, x0.dtype)
        text, text_mask = drop_captions(drop_rng, batch["text"].astype(jnp.float32), batch["text_mask"],
                                        null_text, null_mask, config.data.caption_dropout)
        draws = {"t": t, "eps": eps, "text": text, "text_mask": text_mask}
        if config.contrastive.weight > 0:
            draws["negatives"] = contrastive_negatives(noised(x0, eps, t, diffusion)[0], x0, eps, diffusion)
        if p.dino_weight > 0:
            draws["pdino_weights"] = perceptual.below_t_weights(t, p.dino_t_max)
        if p.lpips_weight > 0:
            draws["lpips_weights"] = perceptual.below_t_weights(t, p.lpips_t_max)
        return draws

    microbatches = config.optim.microbatches
    batch_mean = lambda per_example: jnp.sum(per_example) / (per_example.shape[0] * microbatches)

    def loss_fn(params, batch, draws, route_rng, step, frozen_params):
        """The (micro)batch's share of the whole batch's loss: the shares of the k microbatches add up to it."""
        x0, t, eps = batch["x0"], draws["t"], draws["eps"]
        point, x_t = noised(x0, eps, t, diffusion)
        output, state = model.apply({"params": params}, x_t, t, draws["text"], draws["text_mask"],
                                    route_rng=route_rng, mutable="intermediates")
        losses = {"denoising": batch_mean(denoising_loss(output, x_t, point, x0, eps, diffusion))}
        if config.contrastive.weight > 0:
            losses["contrastive"] = -config.contrastive.weight * batch_mean(
                weighted_error(output, x_t, point, draws["negatives"], diffusion))
        grid = (x0.shape[1] // config.model.patch_size, x0.shape[2] // config.model.patch_size)
        real = _pixels(batch) if "image" in batch else None
        if repa_on:
            captured = state["intermediates"]
            target = frozen.teacher.features(frozen_params["teacher"], real, grid)
            similarity = repa.alignment(captured["repa"][0], captured["hidden_tokens"][0], target,
                                        config.repa.spatial_norm)
            losses["repa"] = -repa.weight_at(config.repa, step) * batch_mean(similarity)
        if perceptual_on:
            predicted = frozen.space.decode(x0_estimate(output, x_t, point, diffusion), frozen_params["decoder"])
            losses.update(_perceptual_losses(frozen, frozen_params, predicted, real, draws, grid))
        return sum(losses.values()), losses

    def _perceptual_losses(frozen, frozen_params, predicted, real, draws, grid):
        p, out = config.perceptual, {}
        if p.dino_weight > 0:
            per_example = perceptual.pdino_loss(frozen.teacher, frozen_params["teacher"], predicted, real,
                                                perceptual.dino_grid(p, grid))
            out["pdino"] = p.dino_weight * jnp.sum(per_example * draws["pdino_weights"])
        if p.lpips_weight > 0:
            per_example = perceptual.lpips_loss(frozen.lpips, frozen_params["lpips"], predicted, real)
            out["lpips"] = p.lpips_weight * jnp.sum(per_example * draws["lpips_weights"])
        return out

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def gradients(params, batch, rng, step, frozen_params):
        draws = per_example_draws(batch, rng)
        route_rng = jax.random.fold_in(rng, ROUTE_STREAM) if routed else None
        if microbatches == 1:
            return grad_fn(params, batch, draws, route_rng, step, frozen_params)

        def accumulate(total, inputs):
            index, micro, micro_draws = inputs
            micro_route_rng = None if route_rng is None else jax.random.fold_in(route_rng, index)
            out = grad_fn(params, micro, micro_draws, micro_route_rng, step, frozen_params)
            return jax.tree.map(jnp.add, total, out), None

        split = _microbatches((batch, draws), microbatches)
        zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad_fn, params, *jax.tree.map(lambda x: x[0], split),
                                                            route_rng, step, frozen_params))
        total, _ = jax.lax.scan(accumulate, zeros, (jnp.arange(microbatches), *split))
        return total

    def train_step(state: TrainState, batch, frozen_params=None):
        rng = jax.random.fold_in(state.rng, state.step)
        (loss, losses), grads = gradients(state.params, batch, rng, state.step, frozen_params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "learning_rate": schedule(state.step)}
        if len(losses) > 1:
            metrics.update({f"loss_{name}": value for name, value in losses.items()})
        params = optax.apply_updates(state.params, updates)
        ema_params = None if state.ema_params is None else ema.update(state.ema_params, params, state.step + 1,
                                                                      config.ema)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema_params)
        finite = nonfinite.is_finite(metrics) & nonfinite.tree_is_finite((params, opt_state, ema_params))
        metrics["nonfinite"] = ~finite
        if config.nonfinite.policy == "skip":  # a non-finite step moves only the step counter (the data position)
            new_state = nonfinite.keep_if(finite, new_state, state.replace(step=state.step + 1))
        return new_state, metrics

    return train_step


def jit_train_step(train_step, state_shardings, mesh: jax.sharding.Mesh):
    """The step jitted over `mesh`: state in its shardings (the old one donated), batch split over
    data x fsdp, teacher params and metrics replicated."""
    return jax.jit(train_step, in_shardings=(state_shardings, sharding.batch_sharding(mesh), sharding.replicated(mesh)),
                   out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=0)


def zero_caption(length: int, width: int) -> tuple[jax.Array, jax.Array]:
    """A stand-in for the empty caption's embeddings and mask where no text encoder runs: zeros, all valid."""
    return jnp.zeros((length, width)), jnp.ones((length,), bool)


def lower_train_step(config: ml_collections.ConfigDict, model: nn.Module, state: TrainState, batch: dict,
                     shift: float, mesh: jax.sharding.Mesh, rules) -> jax.stages.Lowered:
    """The jitted step of `config` lowered for `state` (arrays, or abstract ones with shardings) and
    `batch`, captions dropped to zero embeddings, without frozen networks: what t2ijax.plan and the bench
    compile and measure. `rules`: the logical axis rules."""
    optimizer, schedule = run_optimizer(config)
    step = make_train_step(model, optimizer, schedule, config, *zero_caption(*batch["text"].shape[1:]), shift)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        return jit_train_step(step, jax.tree.map(lambda x: x.sharding, state), mesh).lower(state, batch, None)


def make_heldout_loss(model: nn.Module, diffusion: ml_collections.ConfigDict):
    """(params, batch, t, eps) -> per-example velocity MSE at the given times and noise, no caption
    dropout: the flow-matching loss, on one scale whatever the prediction and loss weighting."""

    def heldout_loss(params, batch, t, eps):
        text = batch["text"].astype(jnp.float32)
        predict = lambda x_t, t: model.apply({"params": params}, x_t, t, text, batch["text_mask"])
        return velocity_mse(predict, batch["x0"], eps, t, diffusion)

    return heldout_loss
