"""ODE samplers from noise (t = 1) to data (t = 0), with classifier-free guidance.

Samplers integrate in the path's rectified-flow coordinates (paths.py): x_hat = x / (alpha + sigma)
over the flow time s = sigma / (alpha + sigma), where d x_hat / d s = eps_hat - x0_hat. On rectified
flow these are x and t themselves; on VP paths they keep the ODE smooth near the data.
"""
import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from t2ijax.diffusion.parameterization import PREDICTIONS
from t2ijax.diffusion.paths import Path, PathPoint, expand, make_path
from t2ijax.diffusion.timesteps import shift_time
from t2ijax.registry import Registry

SAMPLERS = Registry("sampler.name")

# (x_t, t [B]) -> the network's output, in the space of config.diffusion.prediction
OutputFn = Callable[[jax.Array, jax.Array], jax.Array]
# (x_hat, i) -> d x_hat / d s at grid point i
FlowVelocityFn = Callable[[jax.Array, jax.Array], jax.Array]


def _guide(strong: jax.Array, weak: jax.Array, t: jax.Array, guidance: float, interval: tuple[float, float]):
    scale = jnp.where((t >= interval[0]) & (t <= interval[1]), guidance, 1.0)
    return weak + expand(scale, strong) * (strong - weak)


def guided_output(apply_fn, text, text_mask, negative_text, negative_mask, guidance: float,
                  interval: tuple[float, float]) -> OutputFn:
    """The guided network o_n + g (o_c - o_n) for t inside `interval`, o_c outside; one batched call
    for both branches. Every conversion between predictions is affine in the output with the same
    x_t, so guiding the output is guiding the velocity, whatever the network predicts.

    apply_fn(x, t, text, text_mask) is the network; negative_text/negative_mask [L, D]/[L] embed the
    negative prompt (the empty caption for plain classifier-free guidance).
    """
    if guidance == 1.0:
        return lambda x, t: apply_fn(x, t, text, text_mask)

    batch = text.shape[0]
    both_text = jnp.concatenate([text, jnp.broadcast_to(negative_text, text.shape)])
    both_mask = jnp.concatenate([text_mask, jnp.broadcast_to(negative_mask, text_mask.shape)])

    def guided(x, t):
        out = apply_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]), both_text, both_mask)
        return _guide(out[:batch], out[batch:], t, guidance, interval)

    return guided


def routed_guided_output(apply_fn, routed_fn, text, text_mask, guidance: float,
                         interval: tuple[float, float]) -> OutputFn:
    """Guidance by token sparsity (TREAD's self-guidance): o_r + g (o_c - o_r), where the weak branch o_r
    is the conditional network with its tokens routed as in training (routed_fn, same signature as
    apply_fn), in place of the unconditional one."""
    def guided(x, t):
        return _guide(apply_fn(x, t, text, text_mask), routed_fn(x, t, text, text_mask), t, guidance, interval)

    return lambda x, t: apply_fn(x, t, text, text_mask) if guidance == 1.0 else guided(x, t)


def flow_time_grid(path: Path, steps: int, shift: float) -> tuple[jax.Array, jax.Array]:
    """(t, s): steps + 1 times, evenly spaced in flow time before the shift, from noise to data."""
    s = path.flow_time(1.0) * shift_time(jnp.linspace(1.0, 0.0, steps + 1), shift)
    return path.time_at_flow_time(s), s


def flow_match_time_grid(path: Path, steps: int, shift: float) -> tuple[jax.Array, jax.Array]:
    """(t, s): diffusers' FlowMatchEulerDiscreteScheduler.set_timesteps(steps) spacing, which
    PRXPipeline samples on: `steps` times evenly from 1 down to the shifted 1/1000 (the scheduler's
    sigma_min) before the shift, then 0."""
    sigma_min = shift_time(jnp.float32(1.0 / 1000), shift)
    unshifted = jnp.concatenate([jnp.linspace(1.0, sigma_min, steps), jnp.zeros(1)])
    s = path.flow_time(1.0) * shift_time(unshifted, shift)
    return path.time_at_flow_time(s), s


def path_time_grid(path: Path, steps: int, shift: float) -> tuple[jax.Array, jax.Array]:
    """(t, s): steps + 1 times, evenly spaced in the path's own time before the shift (DDPM spacing)."""
    t = shift_time(jnp.linspace(1.0, 0.0, steps + 1), shift)
    return t, path.flow_time(t)


def euler(flow_velocity: FlowVelocityFn, x: jax.Array, s: np.ndarray) -> jax.Array:
    """First-order steps x_hat += (s_next - s) v_hat."""

    def step(x, grid):
        i, h = grid
        return x + h * flow_velocity(x, i), None

    return jax.lax.scan(step, x, (np.arange(len(s) - 1), np.diff(s)))[0]


def heun(flow_velocity: FlowVelocityFn, x: jax.Array, s: np.ndarray) -> jax.Array:
    """Second order: the trapezoid of the velocities at both ends of an Euler step; the last step,
    which ends on the data where no velocity is needed, is plain Euler (as in EDM)."""

    def step(x, grid):
        i, h = grid
        v = flow_velocity(x, i)
        return x + 0.5 * h * (v + flow_velocity(x + h * v, i + 1)), None

    last = len(s) - 2
    x = jax.lax.scan(step, x, (np.arange(last), np.diff(s)[:last]))[0]
    return x + (s[-1] - s[-2]) * flow_velocity(x, last)


def dpmpp_2m(flow_velocity: FlowVelocityFn, x: jax.Array, s: np.ndarray) -> jax.Array:
    """DPM-Solver++(2M) (Lu et al. 2022) in flow coordinates (alpha = 1 - s, sigma = s): exponential
    integrator in lambda = log((1 - s) / s) on the data prediction x0_hat = x_hat - s v_hat, with a
    second-order multistep correction except on the first and last steps (lambda is infinite there)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.diff(np.log1p(-s) - np.log(s))
        correction = np.concatenate([[0.0], h[1:-1] / (2.0 * h[:-2]), [0.0]])[:len(h)]  # 1 / (2 r)
    ratio = s[1:] / s[:-1]

    def step(carry, grid):
        x, x0_prev = carry
        i, s_i, ratio_i, c = grid
        x0 = x - s_i * flow_velocity(x, i)
        return (ratio_i * x + (1.0 - ratio_i) * ((1.0 + c) * x0 - c * x0_prev), x0), None

    grid = (np.arange(len(s) - 1), s[:-1], ratio, correction.astype(np.float32))
    return jax.lax.scan(step, (x, x), grid)[0][0]


@dataclasses.dataclass(frozen=True)
class Sampler:
    integrate: Callable[[FlowVelocityFn, jax.Array, np.ndarray], jax.Array]  # (v_hat, x_hat at s[0], s)
    grid: Callable[[Path, int, float], tuple[jax.Array, jax.Array]]
    vp_only: bool = False
    evaluations: Callable[[int], int] = lambda steps: steps  # network calls for `steps` steps


SAMPLERS.register("euler")(Sampler(euler, flow_time_grid))
SAMPLERS.register("heun")(Sampler(heun, flow_time_grid, evaluations=lambda steps: 2 * steps - 1))
SAMPLERS.register("dpmpp_2m")(Sampler(dpmpp_2m, flow_time_grid))
SAMPLERS.register("flow_match_euler")(Sampler(euler, flow_match_time_grid))  # PRXPipeline's own schedule
# DDIM's update (Song et al. 2021) is the Euler step in flow coordinates; what sets it apart is the
# DDPM spacing, even in t. On rectified flow t is the flow time, so it would be `euler` again.
SAMPLERS.register("ddim")(Sampler(euler, path_time_grid, vp_only=True))


def sampling_grid(sampler: str, path: Path, steps: int, shift: float) -> tuple[np.ndarray, np.ndarray, PathPoint]:
    """(t, s, path at t): the steps + 1 times the named sampler visits, in the path's time and in flow time."""
    return _grid(SAMPLERS.get(sampler).grid, path, steps, float(shift))


@functools.lru_cache(maxsize=64)
def _grid(spacing, path: Path, steps: int, shift: float) -> tuple[np.ndarray, np.ndarray, PathPoint]:
    """Computed by a program of its own, so that samplers embed the results as constants."""

    def grid():
        t, s = spacing(path, steps, shift)
        return t, s, path.at(t)

    return jax.tree.map(np.asarray, jax.jit(grid).lower().compile()())


def network_evaluations(sampler: str, steps: int, guidance: float) -> int:
    """Forward passes of the network per image for `steps` steps of the named sampler; guidance runs each
    on a batch of twice the images, which counts as two."""
    return SAMPLERS.get(sampler).evaluations(steps) * (1 if guidance == 1.0 else 2)


def sample(output_fn: OutputFn, diffusion: ml_collections.ConfigDict, noise: jax.Array, sampler: str,
           steps: int, shift: float) -> jax.Array:
    """Integrates from `noise` at t = 1 to t = 0 with `steps` steps of the named sampler, for a
    network trained under `diffusion` (config.diffusion)."""
    path, prediction = make_path(diffusion), PREDICTIONS.get(diffusion.prediction)
    t, s, points = sampling_grid(sampler, path, steps, shift)
    scale = points.alpha + points.sigma  # x = x_hat * scale
    t_on_grid, points_on_grid = jnp.asarray(t), jax.tree.map(jnp.asarray, points)

    def flow_velocity(x_hat, i):
        point = jax.tree.map(lambda a: a[i], points_on_grid)
        x = x_hat * (point.alpha + point.sigma)
        output = output_fn(x, jnp.full((x.shape[0],), t_on_grid[i]))
        x0, eps = PREDICTIONS.get("velocity").split(point, prediction.to_velocity(point, output, x, diffusion.t_min), x)
        return eps - x0

    return SAMPLERS.get(sampler).integrate(flow_velocity, noise / scale[0], s) * scale[-1]
