"""Parity with diffusers: the Euler flow sampler's sigmas and updates against
FlowMatchEulerDiscreteScheduler, and the VP paths' alphas_cumprod against DDPMScheduler."""
import math

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

from configs import base
from t2ijax.diffusion.paths import make_path
from t2ijax.diffusion.samplers import euler, sample, sampling_grid
from t2ijax.diffusion.timesteps import time_shift

STEPS = 12
TOKENS = 1024  # 64 x 64 latents with patch 2


def _model(x, t):
    """A nonlinear stand-in for the network (same formula in torch and jax): the output depends on the
    state, so any difference in an earlier update shows in every later one."""
    lib = torch if isinstance(x, torch.Tensor) else jnp
    t = t.reshape((-1,) + (1,) * (x.ndim - 1)) if t.ndim else t  # per-example times from `sample`
    return lib.sin(3.0 * x) * (1.0 + t) - 0.5 * x


def _diffusers_trajectory(scheduler, x):
    states = [x]
    for timestep in scheduler.timesteps:
        sigma = timestep / scheduler.config.num_train_timesteps
        x = scheduler.step(_model(x, sigma), timestep, x).prev_sample
        states.append(x)
    return scheduler.sigmas.numpy(), [s.numpy() for s in states]


def _scheduler(shift_mode: str, shift: float) -> FlowMatchEulerDiscreteScheduler:
    """Set up as the SD3 and Flux pipelines do: sigmas linspace(1, 1 / N, N), shifted."""
    sigmas = np.linspace(1.0, 1.0 / STEPS, STEPS)
    if shift_mode == "resolution":
        scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                    base_image_seq_len=256, max_image_seq_len=4096)
        scheduler.set_timesteps(sigmas=sigmas, mu=calculate_shift(TOKENS))
    else:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
        scheduler.set_timesteps(sigmas=sigmas)
    return scheduler


@pytest.mark.parametrize("shift_mode,shift", [("fixed", 1.0), ("fixed", 3.0), ("resolution", None)])
def test_euler_matches_flow_match_euler_discrete_scheduler(shift_mode, shift):
    cfg = base.get_config().diffusion
    cfg.update(shift_mode=shift_mode, shift=shift or 1.0)
    ours_shift = time_shift(cfg, TOKENS)
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype(np.float32)
    sigmas, states = _diffusers_trajectory(_scheduler(shift_mode, shift), torch.from_numpy(x))

    t, s, _ = sampling_grid("euler", make_path(cfg), STEPS, ours_shift)
    np.testing.assert_allclose(s, sigmas, atol=1e-6)
    np.testing.assert_allclose(t, sigmas, atol=1e-6)
    for k in range(STEPS):  # each update, from the same state with the same model output
        flow_velocity = lambda x, i: _model(x, jnp.asarray(t)[k + i])
        np.testing.assert_allclose(euler(flow_velocity, jnp.asarray(states[k]), s[k:k + 2]), states[k + 1], atol=1e-6,
                                   err_msg=f"step {k}")
    # The whole trajectory, where float32 rounding compounds through the model.
    np.testing.assert_allclose(sample(_model, cfg, jnp.asarray(x), "euler", STEPS, ours_shift), states[-1], atol=1e-5)


@pytest.mark.parametrize("beta_schedule,path,betas", [
    ("linear", dict(path="vp_linear", beta_schedule="linear"), dict(beta_start=1e-4, beta_end=0.02)),
    ("scaled_linear", dict(path="vp_linear", beta_schedule="scaled_linear"),
     dict(beta_start=0.00085, beta_end=0.012)),
    ("squaredcos_cap_v2", dict(path="vp_cosine"), {}),
])
def test_vp_alphas_cumprod_match_ddpm_scheduler(beta_schedule, path, betas):
    reference = DDPMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule, **betas).alphas_cumprod.numpy()
    cfg = base.get_config().diffusion
    cfg.update(path)
    point = make_path(cfg).at(jnp.arange(1, 1001) / 1000)  # DDPM step i is t = (i + 1) / 1000
    np.testing.assert_allclose(np.square(point.alpha), reference, atol=1e-6)
    np.testing.assert_allclose(np.square(point.alpha) + np.square(point.sigma), 1.0, atol=1e-6)
    assert math.isclose(float(make_path(cfg).at(0.0).alpha), 1.0)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_match_euler_grid_is_the_schedulers_default_spacing(shift):
    """PRXPipeline calls set_timesteps(steps) without sigmas: a spacing of its own."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(STEPS)
    cfg = base.get_config().diffusion
    _, s, _ = sampling_grid("flow_match_euler", make_path(cfg), STEPS, shift)
    np.testing.assert_allclose(s, scheduler.sigmas.numpy(), atol=1e-6)


def test_resolution_shift_is_flux_calculate_shift_for_every_bucket():
    """Flux's shift (diffusers' calculate_shift, mu = log shift) at the token count of each aspect bucket
    and progressive size a run trains or samples at, square or not."""
    from t2ijax.data.buckets import bucket_grid
    from t2ijax.models.build import num_image_tokens

    model, diffusion = base.get_config().model, base.get_config().diffusion
    diffusion.shift_mode = "resolution"
    sizes = [size for resolution in (256, 512, 1024) for size in bucket_grid(resolution // 8, model.patch_size)]
    assert len({h * w for h, w in sizes}) > 6 and any(h != w for h, w in sizes)
    for height, width in sizes:
        tokens = num_image_tokens(model, height, width)
        assert tokens == (height // 2) * (width // 2)
        mu = calculate_shift(tokens, base_seq_len=256, max_seq_len=4096, base_shift=0.5, max_shift=1.15)
        assert time_shift(diffusion, tokens) == pytest.approx(np.exp(mu), rel=1e-12)
