"""Optimizers and learning-rate schedules from config.optim."""
import ml_collections
import optax

from t2ijax.registry import Registry

OPTIMIZERS = Registry("optim.name")
SCHEDULES = Registry("optim.schedule")


@SCHEDULES.register("constant")
def _constant(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    return optax.join_schedules(
        [optax.linear_schedule(0.0, cfg.learning_rate, max(cfg.warmup_steps, 1)),
         optax.constant_schedule(cfg.learning_rate)],
        [cfg.warmup_steps])


@SCHEDULES.register("cosine")
def _cosine(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=cfg.warmup_steps,
        decay_steps=max(total_steps, cfg.warmup_steps + 1),
        end_value=cfg.learning_rate * cfg.final_lr_fraction)


@OPTIMIZERS.register("adamw")
def _adamw(cfg: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    return optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)


def make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int):
    """Returns (optimizer, schedule): clipping by global norm, then the configured optimizer."""
    schedule = SCHEDULES.get(cfg.schedule)(cfg, total_steps)
    chain = [OPTIMIZERS.get(cfg.name)(cfg, schedule)]
    if cfg.grad_clip_norm > 0:
        chain.insert(0, optax.clip_by_global_norm(cfg.grad_clip_norm))
    return optax.chain(*chain), schedule
