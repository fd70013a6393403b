"""TREAD and SPRINT token routing in the PRX denoiser: routed tokens bypass the block range bit for
bit, kept tokens go through it at their own RoPE positions and come back in order."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2ijax.models.layers import Dense, axial_rope, timestep_embedding
from t2ijax.models.prx import PRX, MLPEmbedder, PRXBlock
from t2ijax.techniques import routing

DEPTH, START, END, RATE = 4, 1, 2, 0.5
ROUTE_RNG = jax.random.PRNGKey(7)


def _inputs():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32)
    text = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
    mask = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    return x, jnp.array([0.3, 0.8]), text, mask


def _model_and_params(method, **kw):
    """Random params everywhere, except that the block after the routed range is an identity
    (adaLN-Zero: zero modulation closes both gates), so capturing its output shows the tokens as the
    range hands them back."""
    model = PRX(in_channels=3, patch_size=2, context_in_dim=8, hidden_size=32, num_heads=4, depth=DEPTH, mlp_ratio=2,
                routing=method, route_start=START, route_end=END, route_rate=RATE, **kw)
    params = nn.unbox(model.init(jax.random.PRNGKey(0), *_inputs())["params"])
    leaves, treedef = jax.tree.flatten(params)
    noise = np.random.default_rng(1)
    params = jax.tree.unflatten(treedef, [0.2 * noise.normal(size=p.shape).astype(np.float32) for p in leaves])
    for leaf in jax.tree.leaves(params["blocks"]["modulation"]):
        leaf[END + 1] = 0.0
    return model, params


def _captured(model, params, layer, route_rng):
    apply = jax.jit(lambda p, rng: model.clone(capture_layer=layer).apply({"params": p}, *_inputs(), route_rng=rng,
                                                                       mutable=["intermediates"])[1])
    return np.asarray(apply(params, route_rng)["intermediates"]["hidden"][0])


def _range_on_kept_tokens(model, params, entering, kept):
    """Blocks START..END applied by hand to the kept tokens, at their grid positions."""
    x, t, text, mask = _inputs()
    txt = Dense(32, (None, "embed")).apply({"params": params["txt_in"]}, text)
    vec = MLPEmbedder(32).apply({"params": params["time_in"]},
                                timestep_embedding(t, 256, scale=model.time_factor, max_period=model.time_max_period))
    cos, sin = axial_rope(4, 4, model.rope_axes_dim, model.theta)
    h = routing.gather_tokens(jnp.asarray(entering), kept)
    key_mask = jnp.concatenate([mask, jnp.ones(kept.shape, bool)], axis=1)
    block = PRXBlock(hidden_size=32, num_heads=4, mlp_ratio=2)
    for i in range(START, END + 1):
        layer = jax.tree.map(lambda p: p[i], params["blocks"])
        h, _ = block.apply({"params": layer}, h, txt, vec, key_mask, cos[kept], sin[kept])
    return np.asarray(h)


def test_tread_routed_tokens_bypass_bit_identical_and_kept_tokens_come_back_in_order():
    model, params = _model_and_params("tread")
    entering = _captured(model, params, START - 1, None)
    leaving = _captured(model, params, END + 1, ROUTE_RNG)
    kept = np.asarray(routing.choose_kept(ROUTE_RNG, 2, 16, RATE))
    assert kept.shape == (2, 8) and (np.diff(kept, axis=1) > 0).all()
    for b in range(2):
        routed = np.setdiff1d(np.arange(16), kept[b])
        np.testing.assert_array_equal(leaving[b, routed], entering[b, routed])
        assert not np.allclose(leaving[b, kept[b]], entering[b, kept[b]])
    np.testing.assert_allclose(routing.gather_tokens(leaving, kept), _range_on_kept_tokens(model, params, entering, kept),
                               rtol=1e-5, atol=1e-5)


def test_tread_without_a_route_rng_is_the_plain_model():
    model, params = _model_and_params("tread")
    plain = PRX(**{f: getattr(model, f) for f in ("in_channels", "patch_size", "context_in_dim", "hidden_size",
                                                    "num_heads", "depth", "mlp_ratio")})
    np.testing.assert_array_equal(model.apply({"params": params}, *_inputs()),
                                  plain.apply({"params": params}, *_inputs()))
    assert not np.allclose(model.apply({"params": params}, *_inputs(), route_rng=ROUTE_RNG),
                           plain.apply({"params": params}, *_inputs()))


def test_sprint_fuses_dense_tokens_with_mask_filled_deep_tokens():
    model, params = _model_and_params("sprint")
    entering = _captured(model, params, START - 1, None)
    fused = _captured(model, params, END + 1, ROUTE_RNG)
    kept = np.asarray(routing.choose_kept(ROUTE_RNG, 2, 16, RATE))
    deep = np.broadcast_to(params["sprint_mask_token"], entering.shape).copy()
    deep[np.arange(2)[:, None], kept] = _range_on_kept_tokens(model, params, entering, kept)
    fuse = params["sprint_fuse"]
    expected = np.concatenate([entering, deep], axis=-1) @ fuse["kernel"] + fuse["bias"]
    np.testing.assert_allclose(fused, expected, rtol=1e-4, atol=1e-4)


def test_sprint_without_dropping_fuses_every_token():
    model, params = _model_and_params("sprint")
    entering = _captured(model, params, START - 1, None)
    fused = _captured(model, params, END + 1, None)
    all_tokens = np.broadcast_to(np.arange(16), (2, 16))
    deep = _range_on_kept_tokens(model, params, entering, all_tokens)
    fuse = params["sprint_fuse"]
    np.testing.assert_allclose(fused, np.concatenate([entering, deep], axis=-1) @ fuse["kernel"] + fuse["bias"],
                               rtol=1e-4, atol=1e-4)


def test_capture_inside_the_range_holds_only_kept_tokens():
    model, params = _model_and_params("tread")
    _, state = model.clone(capture_layer=START).apply({"params": params}, *_inputs(), route_rng=ROUTE_RNG,
                                                      mutable=["intermediates"])
    kept = routing.choose_kept(ROUTE_RNG, 2, 16, RATE)
    np.testing.assert_array_equal(state["intermediates"]["hidden_tokens"][0], kept)
    assert state["intermediates"]["hidden"][0].shape == (2, 8, 32)


@pytest.mark.parametrize("n, rate, kept", [(16, 0.5, 8), (16, 0.0, 15), (16, 1.0, 1), (10, 0.25, 8)])
def test_num_kept_routes_at_least_one_token_and_keeps_at_least_one(n, rate, kept):
    assert routing.num_kept(n, rate) == kept


def test_routed_guidance_pushes_away_from_the_routed_model():
    from t2ijax.diffusion.samplers import routed_guided_output

    model, params = _model_and_params("tread")
    x, t, text, mask = _inputs()
    apply = lambda x, t, txt, m, rng=None: model.apply({"params": params}, x, t, txt, m, route_rng=rng)
    routed = lambda x, t, txt, m: apply(x, t, txt, m, ROUTE_RNG)
    guided = routed_guided_output(apply, routed, text, mask, 3.0, (0.0, 0.5))(x, t)
    full, weak = apply(x, t, text, mask), routed(x, t, text, mask)
    np.testing.assert_allclose(guided[0], weak[0] + 3.0 * (full[0] - weak[0]), rtol=1e-5, atol=1e-5)  # t = 0.3
    np.testing.assert_allclose(guided[1], full[1], rtol=1e-6, atol=1e-6)  # t = 0.8: outside the interval
