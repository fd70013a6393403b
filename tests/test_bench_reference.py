"""t2ijax/benchmarks/reference.py: diffusers' PRX at a t2ijax PRX's configuration, its timings' results, and
its sampling loop against PRXPipeline's."""
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.prx.pipeline_prx import PRXPipeline

from prx_reference import reference_prx
from t2ijax.benchmarks.reference import (autocast, denoise, parameter_count, reference_fields, reference_sample,
                                         reference_train)
from t2ijax.errors import ConfigError
from t2ijax.models.prx import PRX

TINY = dict(in_channels=4, patch_size=2, context_in_dim=32, hidden_size=64, num_heads=4, depth=2)
SHAPES = dict(batch_size=2, latent_size=8, latent_channels=4, text_length=6, text_dim=32)
RESULT_TYPES = dict(images_per_s=float, parameters=int, threads=int, device=str, torch=str, dtype=str)


def _flax_parameter_count(model: PRX) -> int:
    x = jnp.zeros((1, 8, 8, model.in_channels))
    text = jnp.zeros((1, 6, model.context_in_dim))
    shapes = jax.eval_shape(model.init, jax.random.key(0), x, jnp.zeros(1), text, jnp.ones((1, 6), bool))
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))


@pytest.mark.parametrize("extra", [{}, dict(bottleneck_size=16, resolution_embeds=True, mlp_ratio=2.0, axes_dim=(6, 10))])
def test_reference_fields_build_a_diffusers_model_of_the_same_size(extra):
    model = PRX(**TINY, **extra)
    assert parameter_count(reference_fields(model)) == _flax_parameter_count(model)


def test_reference_fields_refuse_a_routed_model():
    with pytest.raises(ConfigError, match="routing='tread'") as error:
        reference_fields(PRX(**TINY, routing="tread", route_start=0, route_end=1))
    assert "\n" not in str(error.value)


def _check_result(result: dict, compiled: bool, **extra_types):
    assert set(result) == {"compile_s", *RESULT_TYPES, *extra_types}
    for key, kind in {**RESULT_TYPES, **extra_types}.items():
        assert isinstance(result[key], kind), (key, result[key])
    assert result["images_per_s"] > 0
    assert result["parameters"] == parameter_count(reference_fields(PRX(**TINY)))
    assert result["threads"] == torch.get_num_threads() == os.cpu_count()
    assert (result["compile_s"] > 0) if compiled else (result["compile_s"] is None)


def test_reference_train_result():
    result = reference_train(reference_fields(PRX(**TINY)), SHAPES, steps=2, compiled=False)
    _check_result(result, compiled=False, step_ms=float)
    assert result["step_ms"] == pytest.approx(1e3 * SHAPES["batch_size"] / result["images_per_s"], rel=1e-9)


@pytest.mark.parametrize("compiled", [False, True])
def test_reference_sample_result(compiled):
    result = reference_sample(reference_fields(PRX(**TINY)), SHAPES, sample_steps=2, guidance=4.0, repeats=1,
                              compiled=compiled)
    _check_result(result, compiled, shift=float, loop_ms=float)
    assert result["loop_ms"] == pytest.approx(1e3 * SHAPES["batch_size"] / result["images_per_s"], rel=1e-9)


@pytest.mark.parametrize("guidance, batch", [(4.0, 1), (1.0, 2)])  # PRXPipeline guides one image at a time
def test_denoise_is_prx_pipelines_loop(guidance, batch):
    transformer = reference_prx(dict(**TINY, axes_dim=[8, 8]), randomize=("modulation", "final_layer.linear"))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(batch, 4, 8, 8, generator=generator)
    text, uncond_text = torch.randn(2, batch, 6, 32, generator=generator)
    text_mask = torch.ones(batch, 6, dtype=torch.bool)
    uncond_mask = text_mask.clone()
    uncond_mask[:, 3:] = False
    pipe = PRXPipeline(transformer=transformer, scheduler=scheduler, text_encoder=None, tokenizer=None)
    expected = pipe(prompt_embeds=text, prompt_attention_mask=text_mask, negative_prompt_embeds=uncond_text,
                    negative_prompt_attention_mask=uncond_mask, latents=noise, num_inference_steps=3,
                    guidance_scale=guidance, height=8 * pipe.vae_scale_factor, width=8 * pipe.vae_scale_factor,
                    use_resolution_binning=False, output_type="latent").images
    with torch.no_grad():
        latents = denoise(transformer, scheduler, noise, text, text_mask, uncond_text, uncond_mask, guidance, 3)
    assert not np.allclose(latents, noise, atol=0.1)
    # Unguided, PRXPipeline embeds one timestep for the batch, denoise one per row: rounding apart.
    np.testing.assert_allclose(latents.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_the_reference_computes_in_bfloat16_when_the_config_does():
    transformer = reference_prx(dict(**TINY, axes_dim=[8, 8]))
    inputs = (torch.randn(2, 4, 8, 8), torch.rand(2), torch.randn(2, 6, 32), torch.ones(2, 6, dtype=torch.bool))
    for dtype, expected in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        with autocast(torch.device("cpu"), dtype):
            assert transformer(*inputs, return_dict=False)[0].dtype == expected
    result = reference_train(reference_fields(PRX(**TINY)), SHAPES, steps=1, compiled=False, dtype="bfloat16")
    assert result["dtype"] == "bfloat16" and math.isfinite(result["images_per_s"])
