"""U-ViT (no diffusers class to compare with): the paper's structure, checked on a tiny random model.

Token layout [time ‖ text ‖ image], each out-block's long skip from the mirrored in-block, no adaLN,
padded text ignored, any image shape, scan == unrolled, REPA's capture, bad input, and that it trains.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import denoiser_inputs
from t2ijax.models.layers import patchify, timestep_embedding
from t2ijax.models.prx import LearnedPositions, count_params
from t2ijax.models.uvit import UViT, UViTBlock

TINY = dict(in_channels=3, patch_size=2, context_in_dim=24, text_len=9, hidden_size=32, num_heads=4, depth=5,
            pos_grid=4)
B, H, W, L = 3, 8, 12, 7  # non-square; the 4 x 6 token grid is not the 4 x 4 position table's


def _inputs(seed=0, h=H, w=W):
    return denoiser_inputs(B, (h, w), 3, L, 24, seed, padded=(4, 1))


def _unrolled(params):
    """Scanned params ("in_blocks"/"out_blocks" stacked over a leading axis) as the unrolled model's."""
    params = dict(params)
    for name in ("in_blocks", "out_blocks"):
        stacked = params.pop(name)
        for i in range(jax.tree.leaves(stacked)[0].shape[0]):
            params[f"{name}_{i}"] = jax.tree.map(lambda p, i=i: p[i], stacked)
    return params


@pytest.fixture(scope="module")
def scanned_params():
    variables = jax.jit(UViT(**TINY).init)(jax.random.key(0), *_inputs())
    return nn.unbox(variables["params"])


@pytest.fixture(scope="module")
def params(scanned_params):
    return _unrolled(scanned_params)


def _block_calls(params, inputs, **fields):
    """Every UViTBlock call of an unrolled forward, in running order: (block params, x, skip, key mask, out)."""
    calls = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, UViTBlock) and context.method_name == "__call__":
            calls.append((context.module.variables["params"], *args, out[0]))
        return out

    with nn.intercept_methods(record):
        out = UViT(**{**TINY, **fields}, scan_layers=False).apply({"params": params}, *inputs)
    return calls, out


def test_tokens_are_time_then_text_then_image_patches(params):
    x, t, text, mask = inputs = _inputs()
    calls, _ = _block_calls(params, inputs)
    tokens, key_mask = calls[0][1], calls[0][3]
    grid = (H // 2, W // 2)
    assert tokens.shape == (B, 1 + L + grid[0] * grid[1], TINY["hidden_size"])

    extras_pos = params["extras_pos_embed"]
    time = timestep_embedding(t, TINY["hidden_size"], scale=1000.0) + extras_pos[0]
    txt = text @ params["context_embed"]["kernel"] + params["context_embed"]["bias"] + extras_pos[1:1 + L]
    positions = LearnedPositions(TINY["pos_grid"], TINY["hidden_size"]).apply(
        {"params": params["pos_embed"]}, *grid)
    img = patchify(x, 2) @ params["patch_embed"]["kernel"] + params["patch_embed"]["bias"] + positions
    np.testing.assert_allclose(tokens[:, 0], time, atol=1e-6)
    np.testing.assert_allclose(tokens[:, 1:1 + L], txt, atol=1e-5)
    np.testing.assert_allclose(tokens[:, 1 + L:], img, atol=1e-5)
    np.testing.assert_array_equal(key_mask, np.concatenate([np.ones((B, 1), bool), mask,
                                                            np.ones((B, grid[0] * grid[1]), bool)], axis=1))


def test_each_out_block_merges_the_mirrored_in_blocks_output(params):
    calls, _ = _block_calls(params, _inputs())
    k = TINY["depth"] // 2
    names = [f"in_blocks_{i}" for i in range(k)] + ["mid_block"] + [f"out_blocks_{j}" for j in range(k)]
    assert len(calls) == len(names)
    for (block_params, *_), name in zip(calls, names, strict=True):  # the blocks run in this order
        assert jax.tree.all(jax.tree.map(np.array_equal, block_params, params[name]))
    for j in range(k):
        skip = calls[k + 1 + j][2]
        np.testing.assert_array_equal(skip, calls[k - 1 - j][4])  # in-block k-1-j's output, as it left it
    assert all(skip is None for _, _, skip, _, _ in calls[:k + 1])


def test_an_even_depth_has_no_mid_block_and_still_mirrors_the_skips():
    model = UViT(**dict(TINY, depth=4), scan_layers=False)
    params = nn.unbox(model.init(jax.random.key(1), *_inputs())["params"])
    assert "mid_block" not in params and {"in_blocks_1", "out_blocks_1"} <= set(params)
    calls, _ = _block_calls(params, _inputs(), depth=4)
    assert len(calls) == 4
    for j in range(2):
        np.testing.assert_array_equal(calls[2 + j][2], calls[1 - j][4])
    scanned = jax.jit(UViT(**dict(TINY, depth=4)).init)(jax.random.key(1), *_inputs())["params"]
    np.testing.assert_allclose(UViT(**dict(TINY, depth=4)).apply({"params": nn.unbox(scanned)}, *_inputs()),
                               model.apply({"params": _unrolled(nn.unbox(scanned))}, *_inputs()), atol=1e-6)


def test_the_long_skips_carry_information(params):
    """Zeroing the skip half of one out-block's merge changes the output: the skips are not dead weights."""
    inputs = _inputs()
    apply = lambda p: np.asarray(UViT(**TINY, scan_layers=False).apply({"params": p}, *inputs))
    cut = jax.tree.map(lambda p: p, params)
    kernel = cut["out_blocks_1"]["skip_linear"]["kernel"]
    cut["out_blocks_1"]["skip_linear"]["kernel"] = kernel.at[TINY["hidden_size"]:].set(0.0)
    assert np.abs(apply(params) - apply(cut)).max() > 1e-4


def test_no_adaln_only_the_papers_parameters(params):
    blocks = {"norm1", "qkv", "proj", "norm2", "fc1", "fc2"}
    k = TINY["depth"] // 2
    expected = {"patch_embed", "pos_embed", "context_embed", "extras_pos_embed", "mid_block", "norm",
                "decoder_pred", "final_layer", *(f"in_blocks_{i}" for i in range(k)),
                *(f"out_blocks_{i}" for i in range(k))}
    assert set(params) == expected
    for name in expected:
        if "block" in name:
            assert set(params[name]) == blocks | ({"skip_linear"} if name.startswith("out") else set()), name
    d, mlp = TINY["hidden_size"], 4 * TINY["hidden_size"]
    per_block = 4 * d + 3 * d * d + d * d + d + 2 * (d * mlp) + mlp + d
    c = 3 * 2 * 2
    total = (c * d + d + 4 * 4 * d + 24 * d + d + (1 + TINY["text_len"]) * d + TINY["depth"] * per_block
             + k * (2 * d * d + d) + 2 * d + d * c + c + 9 * 3 * 3 + 3)
    assert count_params(params) == total


def test_padded_text_is_ignored(params):
    x, t, text, mask = _inputs()
    apply = lambda text: np.asarray(UViT(**TINY, scan_layers=False).apply({"params": params}, x, t, text, mask))
    noise = np.random.default_rng(1).standard_normal(text.shape).astype(np.float32)
    np.testing.assert_array_equal(apply(text), apply(np.where(mask[..., None], text, text + 10 * noise)))
    assert np.abs(apply(text) - apply(np.where(mask[..., None], text + noise, text))).max() > 1e-3


@pytest.mark.parametrize("size", [(12, 8), (16, 16), (4, 2)])
def test_any_image_shape(scanned_params, size):
    inputs = _inputs(h=size[0], w=size[1])
    out = UViT(**TINY).apply({"params": scanned_params}, *inputs)
    assert out.shape == inputs[0].shape and out.dtype == jnp.float32
    assert np.isfinite(out).all()


def test_scan_equals_unrolled(scanned_params, params):
    inputs = _inputs()
    scanned = np.asarray(UViT(**TINY).apply({"params": scanned_params}, *inputs))
    unrolled = np.asarray(UViT(**TINY, scan_layers=False).apply({"params": params}, *inputs))
    np.testing.assert_allclose(scanned, unrolled, atol=1e-6, rtol=0)
    no_conv = dict(scanned_params)
    no_conv.pop("final_layer")
    assert UViT(**TINY, final_conv=False).apply({"params": no_conv}, *inputs).shape == inputs[0].shape


@pytest.mark.parametrize("scan", [True, False])
def test_every_param_has_logical_axis_names(scan):
    variables = jax.eval_shape(UViT(**TINY, scan_layers=scan).init, jax.random.key(0), *_inputs())
    allowed = {None, "embed", "mlp", "heads", "kv", "layers", "conv_in"}
    boxed = jax.tree_util.tree_leaves_with_path(variables["params"],
                                                is_leaf=lambda v: isinstance(v, nn.LogicallyPartitioned))
    for path, leaf in boxed:
        where = jax.tree_util.keystr(path)
        assert isinstance(leaf, nn.LogicallyPartitioned), f"{where} has no logical axis names"
        assert len(leaf.names) == leaf.value.ndim and set(leaf.names) <= allowed, f"{where}: {leaf.names}"
        stacked = scan and where.startswith(("['in_blocks']", "['out_blocks']"))
        assert (leaf.names[0] == "layers") == stacked, f"{where}: {leaf.names}"


def test_remat_keeps_gradients(scanned_params):
    inputs = _inputs()

    def grads(remat_policy):
        model = UViT(**TINY, remat_policy=remat_policy)
        return jax.jit(jax.grad(lambda p: jnp.mean(jnp.square(model.apply({"params": p}, *inputs)))))(
            scanned_params)

    reference = grads("none")
    assert all(np.abs(g).max() > 0 for g in jax.tree.leaves(reference))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), grads("full"), reference)


@pytest.mark.parametrize("layer", [0, 2, 3])  # an in-block, the mid-block, an out-block
def test_repa_captures_the_image_tokens_after_a_block(params, layer):
    inputs = _inputs()
    calls, out = _block_calls(params, inputs, capture_layer=layer)
    _, state = UViT(**TINY, scan_layers=False, capture_layer=layer).apply(
        {"params": params}, *inputs, mutable=["intermediates"])
    (hidden,), (tokens,) = state["intermediates"]["hidden"], state["intermediates"]["hidden_tokens"]
    np.testing.assert_array_equal(hidden, calls[layer][4][:, 1 + L:])
    np.testing.assert_array_equal(tokens[0], np.arange(hidden.shape[1]))
    np.testing.assert_allclose(out, UViT(**TINY, scan_layers=False).apply({"params": params}, *inputs),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("fields, inputs, message", [
    (dict(depth=1), {}, "at least 2"),
    (dict(routing="tread"), {}, "no token routing"),
    (dict(text_len=6), {}, "more than U-ViT's text_len 6"),
    (dict(pos_grid=0), {}, "pos_grid > 0"),
    ({}, dict(pooled=np.zeros((B, 8), np.float32)), "no pooled"),
])
def test_bad_input_is_one_clear_error(fields, inputs, message):
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(UViT(**{**TINY, **fields}).init, jax.random.key(0), *_inputs(), **inputs)


def test_trains_on_a_fixed_batch():
    """Flow matching on 4 fixed (image, noise, t) triples: 200 Adam steps take the loss below 5% of its start."""
    model = UViT(**dict(TINY, depth=3))
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((4, 8, 8, 3)).astype(np.float32)
    noise = rng.standard_normal(x0.shape).astype(np.float32)
    t = np.linspace(0.1, 0.9, 4).astype(np.float32)
    text = rng.standard_normal((4, L, 24)).astype(np.float32)
    mask = np.ones((4, L), bool)
    xt = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * noise
    loss_fn = lambda p: jnp.mean(jnp.square(model.apply({"params": p}, xt, t, text, mask) - (noise - x0)))
    params = nn.unbox(model.init(jax.random.key(0), xt, t, text, mask)["params"])
    optimizer = optax.adam(3e-3)

    @jax.jit
    def steps(params, opt_state):
        def step(carry, _):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = optimizer.update(grads, opt_state)
            return (optax.apply_updates(params, updates), opt_state), loss
        return jax.lax.scan(step, (params, opt_state), length=200)

    (params, _), losses = steps(params, optimizer.init(params))
    assert float(loss_fn(params)) < 0.05 * float(losses[0]), losses[::50]


def test_bf16_compute_stays_close_to_fp32(scanned_params):
    inputs = _inputs()
    out = {dtype: np.asarray(jax.jit(UViT(**TINY, dtype=dtype).apply)({"params": scanned_params}, *inputs))
           for dtype in (jnp.float32, jnp.bfloat16)}
    assert out[jnp.bfloat16].dtype == np.float32
    assert np.abs(out[jnp.bfloat16] - out[jnp.float32]).max() < 0.05 * np.abs(out[jnp.float32]).max()
