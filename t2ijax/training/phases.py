"""Progressive / multi-resolution training: phases of (resolution, batch size, steps, learning rate).

A run goes through config.resolution.phases in order; without any it is one phase of
data.resolution, data.global_batch_size and optim.learning_rate. A phase's learning rate scales
the whole update (Adam's and Muon's alike) by learning_rate / optim.learning_rate, so the
schedule's shape (warmup, cosine) spans the run and each phase sets its height.
"""
import dataclasses

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from t2ijax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Phase:
    index: int
    resolution: int        # pixels, the side of the square (the base of the buckets)
    global_batch_size: int
    start: int             # first step
    steps: int
    learning_rate: float

    @property
    def end(self) -> int:
        return self.start + self.steps


def phases(config: ml_collections.ConfigDict) -> list[Phase]:
    if not config.resolution.phases:
        return [Phase(0, config.data.resolution, config.data.global_batch_size, 0, config.total_steps,
                      config.optim.learning_rate)]
    out, start = [], 0
    for index, (resolution, batch_size, steps, learning_rate) in enumerate(config.resolution.phases):
        out.append(Phase(index, int(resolution), int(batch_size), start, int(steps), float(learning_rate)))
        start += int(steps)
    return out


def phase_at(all_phases: list[Phase], step: int) -> Phase:
    """The phase that trains step `step` (the last one from its end on)."""
    return next((p for p in all_phases if step < p.end), all_phases[-1])


def phase_config(config: ml_collections.ConfigDict, phase: Phase) -> ml_collections.ConfigDict:
    """`config` with data.resolution and data.global_batch_size of `phase`: what its data is built with."""
    out = ml_collections.ConfigDict(config.to_dict())
    out.data.resolution, out.data.global_batch_size = phase.resolution, phase.global_batch_size
    return out


def training_sizes(config: ml_collections.ConfigDict) -> list[tuple[int, int]]:
    """Every (height, width) pixel size the run trains at: each phase's buckets (or square)."""
    from t2ijax.data.buckets import grid

    return sorted({size for phase in phases(config) for size in grid(phase_config(config, phase))})


def learning_rate_scale(config: ml_collections.ConfigDict) -> optax.Schedule | None:
    """Step -> the factor of the phase it is in; None without phases."""
    if not config.resolution.phases:
        return None
    all_phases = phases(config)
    ends = jnp.asarray([p.end for p in all_phases[:-1]], jnp.int32)
    factors = jnp.asarray([p.learning_rate / config.optim.learning_rate for p in all_phases], jnp.float32)
    return lambda step: factors[jnp.searchsorted(ends, step, side="right")]


def check_phases(config: ml_collections.ConfigDict, multiple: int) -> None:
    """Each phase is (resolution, batch size, steps, learning rate) with a resolution divisible by `multiple`
    (patch size x autoencoder downsample); the last is data.resolution's and the steps add up to total_steps."""
    if not config.resolution.phases:
        return
    for phase in config.resolution.phases:
        if len(phase) != 4:
            raise ConfigError(f"config.resolution.phases entry {tuple(phase)} must be (resolution, global_batch_size, "
                              "steps, learning_rate)")
        resolution, batch_size, steps, learning_rate = phase
        if min(resolution, batch_size, steps) <= 0 or learning_rate <= 0 or resolution % multiple:
            raise ConfigError(f"config.resolution.phases entry {tuple(phase)}: resolution, batch size, steps and "
                              f"learning rate must be positive and the resolution a multiple of {multiple}")
    if config.resolution.phases[-1][0] != config.data.resolution:
        raise ConfigError(f"the last of config.resolution.phases trains at {config.resolution.phases[-1][0]} px but "
                          f"config.data.resolution={config.data.resolution}, the size the run samples and is "
                          f"evaluated at; set --config.data.resolution={config.resolution.phases[-1][0]}")
    total = int(np.sum([p[2] for p in config.resolution.phases]))
    if total != config.total_steps:
        raise ConfigError(f"config.resolution.phases add up to {total} steps but config.total_steps="
                          f"{config.total_steps}; set --config.total_steps={total}")
    if config.optim.learning_rate <= 0:
        raise ConfigError("config.resolution.phases scale config.optim.learning_rate, which must be positive")
