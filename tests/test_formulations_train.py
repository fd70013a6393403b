"""Every formulation trains a few steps on the tiny config without NaN, and every sampler generates.

One Run is set up for the module; the network and the optimizer update are compiled once and the
formulation around them (timesteps, path, conversions, weights) runs eagerly, so a combination costs
well under a second instead of a compile of the whole step.
"""
import itertools

import jax
import jax.numpy as jnp
import optax
import pytest

from conftest import tiny_config
from t2ijax.config import validate
from t2ijax.diffusion.samplers import SAMPLERS, guided_output, sample
from t2ijax.diffusion.timesteps import time_shift
from t2ijax.errors import ConfigError
from t2ijax.models.build import num_image_tokens
from t2ijax.training.loop import Run
from t2ijax.training.step import make_train_step

PATHS = [dict(path="rectified_flow"), dict(path="vp_cosine"), dict(path="vp_linear", beta_schedule="linear"),
         dict(path="vp_linear", beta_schedule="scaled_linear")]
PREDICTIONS = ["velocity", "epsilon", "x0", "v"]
# The other axes, cycled over the path x prediction grid so that every value of each is trained.
OTHER_AXES = {
    "loss_space": ["prediction", "velocity", "epsilon", "x0", "v"],
    "loss_weighting": ["uniform", "min_snr", "sigmoid", "edm"],
    "timesteps": ["uniform", "logit_normal", "mode", "cosmap", "discrete"],
    "shift_mode": ["fixed", "resolution"],
    "shift": [1.0, 3.0, 0.5],
}


def _config(data_dir: str, diffusion: dict, sampler: str = "euler"):
    config = tiny_config(data_dir)
    config.diffusion.update(diffusion)
    config.sampler.name = sampler
    return config


def _valid(config) -> bool:
    try:
        validate(config, num_devices=1)
    except ConfigError:
        return False
    return True


def _combinations() -> list[dict]:
    grid = [dict(path, prediction=p) for path, p in itertools.product(PATHS, PREDICTIONS)]
    grid = [d for d in grid if _valid(_config("data", d))]
    return [dict(d, **{axis: values[i % len(values)] for axis, values in OTHER_AXES.items()})
            for i, d in enumerate(grid)]


COMBINATIONS = _combinations()


def test_the_combinations_cover_every_value_of_every_axis():
    for axis, values in OTHER_AXES.items():
        assert {c[axis] for c in COMBINATIONS} == set(values), axis
    assert len(COMBINATIONS) == 14  # epsilon is invalid on rectified flow and vp_cosine


class _CompiledModel:
    """The network with a compiled apply, standing in for the module inside make_train_step."""

    def __init__(self, model):
        self.apply = jax.jit(model.apply, static_argnames="mutable")


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
    return Run(tiny_config(data_dir), str(tmp_path_factory.mktemp("formulations"))).setup()


@pytest.mark.parametrize("diffusion", COMBINATIONS, ids=lambda d: "-".join(str(v) for v in d.values()))
def test_combination_trains_without_nan(run, diffusion):
    config = _config("data", diffusion)
    optimizer = optax.GradientTransformation(run.optimizer.init, jax.jit(run.optimizer.update))
    shift = time_shift(config.diffusion, num_image_tokens(config.model, *run.image_shape[:2]))
    step = make_train_step(_CompiledModel(run.model), optimizer, run.schedule, config,
                           jnp.asarray(run.data.null_text, jnp.float32), jnp.asarray(run.data.null_mask), shift)
    state = run.state
    for i in range(3):
        state, metrics = step(state, run.device_batch(i))
        assert bool(jnp.isfinite(metrics["loss"])) and bool(jnp.isfinite(metrics["grad_norm"])), metrics
    leaves = jax.tree.leaves(state.params)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)
    assert int(state.step) == 3


@pytest.mark.parametrize("sampler", SAMPLERS.names())
def test_every_sampler_generates_finite_images_with_guidance(run, sampler):
    diffusion = _config("data", dict(path="vp_cosine", prediction="v")).diffusion
    model = _CompiledModel(run.model)
    params = run.state.params
    output_fn = guided_output(lambda x, t, txt, m: model.apply({"params": params}, x, t, txt, m),
                              jnp.asarray(run.data.prompts["text"], jnp.float32),
                              jnp.asarray(run.data.prompts["text_mask"]), jnp.asarray(run.data.negative_text, jnp.float32),
                              jnp.asarray(run.data.negative_mask), 3.0, (0.1, 0.9))
    noise = jax.random.normal(jax.random.PRNGKey(0), (len(run.data.prompts["text"]),) + run.image_shape)
    images = sample(output_fn, diffusion, noise, sampler, 2, 1.0)
    assert images.shape == noise.shape and bool(jnp.all(jnp.isfinite(images)))
