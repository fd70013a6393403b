"""Optimizers and learning-rate schedules from config.optim."""
import math
import re

import jax
import jax.numpy as jnp
import ml_collections
import optax
from optax.contrib import MuonDimensionNumbers, scale_by_muon

from t2ijax.registry import Registry

OPTIMIZERS = Registry("optim.name")
SCHEDULES = Registry("optim.schedule")


@SCHEDULES.register("constant")
def _constant(cfg: ml_collections.ConfigDict, peak: float, total_steps: int) -> optax.Schedule:
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, max(cfg.warmup_steps, 1)), optax.constant_schedule(peak)],
        [cfg.warmup_steps])


@SCHEDULES.register("cosine")
def _cosine(cfg: ml_collections.ConfigDict, peak: float, total_steps: int) -> optax.Schedule:
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=cfg.warmup_steps,
        decay_steps=max(total_steps, cfg.warmup_steps + 1), end_value=peak * cfg.final_lr_fraction)


@OPTIMIZERS.register("adamw")
def _adamw(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    return _adamw_from(cfg, SCHEDULES.get(cfg.schedule)(cfg, cfg.learning_rate, total_steps))


def _adamw_from(cfg: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    return optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)


# Block kernels whose fan-in spans more than their first axis: the attention output projections, which map
# [heads, kv] to embed (prx to_out, dit_cross out, mmdit and flux img_out / txt_out, flux attn_out, uvit proj).
# Every other block kernel maps its first axis to the rest.
_FAN_IN_AXES = dict.fromkeys(("to_out", "out", "img_out", "txt_out", "attn_out", "proj"), 2)
# A backbone's block stacks: "blocks", "double_blocks", "single_blocks", "in_blocks", "out_blocks",
# "final_block", stacked over a leading layer axis when scanned and numbered (_0, _1, ...) when not;
# U-ViT's "mid_block" is one block, never stacked.
_BLOCK = re.compile(r"(?:blocks|double_blocks|single_blocks|in_blocks|out_blocks|final_block|mid_block)(_\d+)?")
_SINGLE_BLOCKS = ("mid_block",)


def muon_matrix(path, leaf) -> MuonDimensionNumbers | None:
    """How the param at `path` is seen as the matrices Muon orthogonalizes, or None if Adam updates it.

    Muon takes the Dense kernels of the transformer blocks (PRX's rule: the 2-D weights of the blocks, on
    every backbone): each layer's kernel as the (fan-in x fan-out) matrix its Dense multiplies by, the
    leading layer axis of nn.scan's stacked blocks as a batch of independent matrices.
    """
    names = [key.key for key in path if isinstance(key, jax.tree_util.DictKey)]
    block = next((match for n in names if (match := _BLOCK.fullmatch(n))), None)
    if block is None or names[-1] != "kernel":
        return None
    first = 0 if block.group(1) or block.group(0) in _SINGLE_BLOCKS else 1
    split = first + _FAN_IN_AXES.get(names[-2], 1)
    return MuonDimensionNumbers(tuple(range(first, split)), tuple(range(split, leaf.ndim)))


def _muon_matrices(updates):
    """muon_matrix for each update, skipping those optax.partition hands to the other group."""
    masked = lambda x: isinstance(x, optax.MaskedNode)
    return jax.tree_util.tree_map_with_path(lambda path, x: x if masked(x) else muon_matrix(path, x),
                                            updates, is_leaf=masked)


def _scale_to_rms(rms: float) -> optax.GradientTransformation:
    """Scales each orthogonalized (fan-in x fan-out) update by rms * sqrt(max(fan-in, fan-out)), giving
    it about that root mean square whatever its shape, as AdamW's updates have (Moonlight; PRX's rms_scale)."""

    def update(updates, state, params=None):
        def scale(u, dims):
            fan = max(math.prod(u.shape[a] for a in axes) for axes in dims)
            return u * jnp.asarray(rms * math.sqrt(fan), u.dtype)

        return jax.tree.map(scale, updates, _muon_matrices(updates),
                            is_leaf=lambda x: isinstance(x, MuonDimensionNumbers)), state

    return optax.GradientTransformation(optax.init_empty_state, update)


@OPTIMIZERS.register("muon")
def _muon(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """Muon (Nesterov momentum, Newton-Schulz orthogonalized) on the block matrices, AdamW on the rest;
    both follow cfg.schedule, from their own peak learning rates."""
    schedule = SCHEDULES.get(cfg.schedule)
    muon = optax.chain(
        scale_by_muon(ns_steps=cfg.muon_ns_steps, beta=cfg.muon_momentum, nesterov=True,
                      weight_dimension_numbers=_muon_matrices),
        _scale_to_rms(cfg.muon_update_rms),
        optax.add_decayed_weights(cfg.muon_weight_decay),
        optax.scale_by_learning_rate(schedule(cfg, cfg.muon_learning_rate, total_steps)))
    labels = lambda params: jax.tree_util.tree_map_with_path(
        lambda path, x: "adam" if muon_matrix(path, x) is None else "muon", params)
    adam = _adamw_from(cfg, schedule(cfg, cfg.learning_rate, total_steps))
    return optax.partition({"muon": muon, "adam": adam}, labels)


def make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int, scale: optax.Schedule | None = None):
    """Returns (optimizer, schedule): clipping by global norm, then the configured optimizer, then its
    update times `scale(step)` when given (t2ijax.training.phases); `schedule` is the resulting learning rate of
    cfg.learning_rate's params (under muon, those Adam updates)."""
    schedule = SCHEDULES.get(cfg.schedule)(cfg, cfg.learning_rate, total_steps)
    chain = [OPTIMIZERS.get(cfg.name)(cfg, total_steps)]
    if cfg.grad_clip_norm > 0:
        chain.insert(0, optax.clip_by_global_norm(cfg.grad_clip_norm))
    if scale is not None:
        chain.append(optax.scale_by_schedule(scale))
        schedule = lambda step, base=schedule: base(step) * scale(step)
    return optax.chain(*chain), schedule


def run_optimizer(config: ml_collections.ConfigDict):
    """make_optimizer for a whole run config: config.optim, scaled by its phases' learning rates."""
    from t2ijax.training.phases import learning_rate_scale

    return make_optimizer(config.optim, config.total_steps, learning_rate_scale(config))
