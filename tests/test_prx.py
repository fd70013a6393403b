"""PRX denoiser: parity with diffusers, masking, logical axis names, remat, scan."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.transformers.transformer_prx import (PRXEmbedND,
                                                           apply_rope as torch_apply_rope,
                                                           get_image_ids)

from conftest import denoiser_inputs
from prx_reference import reference_forward, reference_prx
from t2ijax.models.layers import apply_rope, axial_rope, timestep_embedding
from t2ijax.models.prx import PRX, count_params
from t2ijax.interop.prx_weights import params_from_state_dict

TINY = dict(in_channels=3, patch_size=2, context_in_dim=24, hidden_size=64, num_heads=4, depth=2,
            axes_dim=[8, 8])
PIXEL_LIKE = dict(TINY, bottleneck_size=16, resolution_embeds=True)
B, H, W, L = 3, 8, 12, 7  # non-square image so row/column RoPE axes cannot be swapped


def _inputs(seed=0):
    return denoiser_inputs(B, (H, W), 3, L, 24, seed, padded=(4, 1))


@pytest.fixture(scope="module")
def tiny_state_dict():
    return {k: v.numpy() for k, v in reference_prx(TINY).state_dict().items()}


@pytest.mark.parametrize("cfg", [TINY, PIXEL_LIKE], ids=["latent", "bottleneck+resolution"])
def test_matches_diffusers_with_scan_and_loop(cfg):
    torch_model = reference_prx(cfg)
    state_dict = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    inputs = _inputs()
    expected = reference_forward(torch_model, *inputs)

    outputs = {}
    for scan in (True, False):
        model = PRX(**cfg, scan_layers=scan)
        params = params_from_state_dict(state_dict, model)
        assert count_params(params) == sum(p.numel() for p in torch_model.parameters())
        outputs[scan] = np.asarray(model.apply({"params": params}, *inputs))
        assert outputs[scan].shape == inputs[0].shape
        np.testing.assert_allclose(outputs[scan], expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(outputs[True], outputs[False], atol=1e-6, rtol=0)


def test_timestep_embedding_and_rope_match_diffusers():
    t = np.array([0.0, 0.013, 0.5, 1.0], np.float32)
    expected = get_timestep_embedding(torch.from_numpy(t), 256, flip_sin_to_cos=True,
                                      downscale_freq_shift=0, scale=1000.0, max_period=10000)
    # Arguments reach 1000, where one fp32 ulp is 6e-5 rad: exp() rounding differs by that much.
    np.testing.assert_allclose(timestep_embedding(t, 256, scale=1000.0), expected.numpy(),
                               atol=1e-4, rtol=0)

    grid_h, grid_w, heads, head_dim = 5, 7, 2, 16
    q = np.random.default_rng(0).standard_normal((1, grid_h * grid_w, heads, head_dim), np.float32)
    pe = PRXEmbedND(head_dim, 10000, [6, 10])(get_image_ids(1, grid_h, grid_w, 1, "cpu"))
    expected = torch_apply_rope(torch.from_numpy(q).transpose(1, 2), pe).transpose(1, 2)
    got = apply_rope(jnp.asarray(q), *axial_rope(grid_h, grid_w, [6, 10], 10000.0))
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5, rtol=0)


def test_padded_text_is_ignored(tiny_state_dict):
    model = PRX(**TINY, scan_layers=False)
    params = params_from_state_dict(tiny_state_dict, model)
    x, t, text, mask = _inputs()
    apply = lambda text: np.asarray(model.apply({"params": params}, x, t, text, mask))
    noise = np.random.default_rng(1).standard_normal(text.shape).astype(np.float32)

    padded_changed = np.where(mask[..., None], text, text + 10 * noise)
    np.testing.assert_array_equal(apply(text), apply(padded_changed))
    real_changed = np.where(mask[..., None], text + noise, text)
    assert np.abs(apply(text) - apply(real_changed)).max() > 1e-3


@pytest.mark.parametrize("scan", [True, False])
def test_every_param_has_logical_axis_names(scan):
    model = PRX(**TINY, scan_layers=scan)
    x, t, text, mask = _inputs()
    variables = jax.eval_shape(model.init, jax.random.key(0), x, t, text, mask)
    allowed = {None, "embed", "mlp", "heads", "kv", "layers", "conv_in"}
    boxed = jax.tree_util.tree_leaves_with_path(
        variables["params"], is_leaf=lambda v: isinstance(v, nn.LogicallyPartitioned))
    for path, leaf in boxed:
        where = jax.tree_util.keystr(path)
        assert isinstance(leaf, nn.LogicallyPartitioned), f"{where} has no logical axis names"
        shape = leaf.value.shape
        assert len(leaf.names) == len(shape), f"{where}: {leaf.names} vs {shape}"
        assert set(leaf.names) <= allowed, f"{where}: {leaf.names}"
        in_stack = where.startswith("['blocks']")
        assert (leaf.names[0] == "layers") == in_stack, f"{where}: {leaf.names}"
        if in_stack:
            assert leaf.value.shape[0] == TINY["depth"]


@pytest.mark.parametrize("policy", ["full", "dots", "dots_with_no_batch_dims"])
def test_remat_policies_keep_gradients(tiny_state_dict, policy):
    inputs = _inputs()

    def grads(remat_policy):
        model = PRX(**TINY, remat_policy=remat_policy)
        params = params_from_state_dict(tiny_state_dict, model)
        loss = lambda p: jnp.mean(jnp.square(model.apply({"params": p}, *inputs)))
        return jax.jit(jax.grad(loss))(params)

    reference = grads("none")
    assert all(np.abs(g).max() > 0 for g in jax.tree.leaves(reference))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
                 grads(policy), reference)


def test_scan_traces_to_the_same_program_at_any_depth():
    def n_equations(depth):
        model = PRX(**dict(TINY, depth=depth), remat_policy="full")
        inputs = _inputs()
        params = jax.eval_shape(model.init, jax.random.key(0), *inputs)
        return len(jax.make_jaxpr(model.apply)(params, *inputs).eqns)

    assert n_equations(2) == n_equations(8)


def test_bf16_compute_stays_close_to_fp32(tiny_state_dict):
    inputs = _inputs()
    out = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        model = PRX(**TINY, dtype=dtype, scan_layers=False)
        params = params_from_state_dict(tiny_state_dict, model)
        out[dtype] = np.asarray(jax.jit(model.apply)({"params": params}, *inputs))
    assert out[jnp.bfloat16].dtype == np.float32
    scale = np.abs(out[jnp.float32]).max()
    assert np.abs(out[jnp.bfloat16] - out[jnp.float32]).max() < 0.05 * scale
