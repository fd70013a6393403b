"""The MMDiT backbone (SD3): parity with diffusers' SD3Transformer2DModel, exact weight round trips, the
text mask and pooled vector t2ijax adds, and the configs it refuses."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import SD3Transformer2DModel

from conftest import assert_blocks_ran, block_calls
from sd3_reference import reference_forward, reference_sd3
from t2ijax.errors import ConfigError
from t2ijax.interop import from_diffusers, sd3_weights, to_diffusers
from t2ijax.models.mmdit import JointBlock, MMDiT
from t2ijax.techniques import routing

BASE = dict(in_channels=4, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=24,
            caption_projection_dim=32, pooled_projection_dim=12, out_channels=4)
CONFIGS = {  # depth 1 is only the last (context_pre_only) block
    "patch2-depth2": dict(BASE, patch_size=2, num_layers=2, sample_size=8, pos_embed_max_size=10),
    "patch1-qk_norm-depth3": dict(BASE, patch_size=1, num_layers=3, sample_size=6, pos_embed_max_size=13,
                                  qk_norm="rms_norm"),
    "patch2-qk_norm-depth1": dict(BASE, patch_size=2, num_layers=1, sample_size=16, pos_embed_max_size=9,
                                  qk_norm="rms_norm"),
}
SIZE = (8, 12)  # latent height, width: non-square, off-centre in every config's position table


def _inputs(cfg, batch=2, length=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *SIZE, cfg["in_channels"])).astype(np.float32)
    t = rng.uniform(size=batch).astype(np.float32)
    text = rng.standard_normal((batch, length, cfg["joint_attention_dim"])).astype(np.float32)
    pooled = rng.standard_normal((batch, cfg["pooled_projection_dim"])).astype(np.float32)
    return x, t, text, np.ones((batch, length), bool), pooled


def _state_dict(torch_model) -> dict[str, np.ndarray]:
    return {name: tensor.numpy() for name, tensor in torch_model.state_dict().items()}


@pytest.fixture(scope="module", params=list(CONFIGS))
def saved(request, tmp_path_factory):
    torch_model = reference_sd3(CONFIGS[request.param])
    directory = tmp_path_factory.mktemp(request.param)
    torch_model.save_pretrained(directory)
    return CONFIGS[request.param], torch_model, directory


def test_import_matches_diffusers(saved):
    cfg, torch_model, directory = saved
    model, params = from_diffusers(str(directory))
    assert isinstance(model, MMDiT) and model.scan_layers
    x, t, text, mask, pooled = _inputs(cfg)
    got = jax.jit(model.apply)({"params": params}, x, t, text, mask, pooled=pooled)
    np.testing.assert_allclose(np.asarray(got), reference_forward(torch_model, x, t, text, pooled), rtol=1e-5,
                               atol=1e-5)


def test_export_loads_in_diffusers_and_round_trips_exactly(saved, tmp_path):
    cfg, torch_model, directory = saved
    model, params = from_diffusers(str(directory), scan_layers=False, remat_policy="full")
    to_diffusers(model, params, tmp_path / "export")
    reloaded = SD3Transformer2DModel.from_pretrained(tmp_path / "export").eval()
    original = torch_model.state_dict()
    assert reloaded.state_dict().keys() == original.keys()
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    x, t, text, mask, pooled = _inputs(cfg, seed=1)
    np.testing.assert_array_equal(reference_forward(reloaded, x, t, text, pooled),
                                  reference_forward(torch_model, x, t, text, pooled))

    _, again = from_diffusers(str(tmp_path / "export"), scan_layers=False)
    jax.tree.map(np.testing.assert_array_equal, again, params)
    scanned, scanned_params = from_diffusers(str(tmp_path / "export"))  # unrolled + remat == scanned
    np.testing.assert_allclose(
        np.asarray(jax.jit(model.apply)({"params": params}, x, t, text, mask, pooled=pooled)),
        np.asarray(jax.jit(scanned.apply)({"params": scanned_params}, x, t, text, mask, pooled=pooled)),
        rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def pooling_model():
    """A random MMDiT whose pooled vector may be the text's mean (pooled_projection_dim == context_in_dim)."""
    model = MMDiT(in_channels=4, patch_size=2, context_in_dim=24, pooled_projection_dim=24, hidden_size=32,
                  num_heads=2, depth=2, qk_norm=True, sample_size=8, pos_embed_max_size=8)
    x, t, text, mask, _ = _inputs(dict(in_channels=4, joint_attention_dim=24, pooled_projection_dim=24))
    params = jax.jit(model.init)(jax.random.key(0), x, t, text, mask)["params"]
    leaves, tree = jax.tree.flatten(params)  # adaLN-Zero starts at zero: every weight random instead
    rng = np.random.default_rng(1)
    params = jax.tree.unflatten(tree, [0.3 * rng.standard_normal(p.shape, np.float32) for p in leaves])
    return model, params, (x, t, text)


def test_padded_text_tokens_do_not_reach_the_image(pooling_model):
    model, params, (x, t, text) = pooling_model
    mask = np.ones(text.shape[:2], bool)
    mask[0, 3:] = False
    mask[1, 1:] = False
    other = text.copy()
    other[~mask] = np.random.default_rng(5).standard_normal((int((~mask).sum()), text.shape[-1]))
    apply = jax.jit(model.apply)
    for pooled in (None, np.ones((2, 24), np.float32)):  # the text's masked mean, or a given vector
        out = np.asarray(apply({"params": params}, x, t, text, mask, pooled=pooled))
        np.testing.assert_array_equal(np.asarray(apply({"params": params}, x, t, other, mask, pooled=pooled)), out)
        real_changed = text.copy()
        real_changed[0, 0] += 1.0
        assert not np.allclose(np.asarray(apply({"params": params}, x, t, real_changed, mask, pooled=pooled)), out)


def test_pooled_defaults_to_the_mean_of_the_real_text_tokens(pooling_model):
    model, params, (x, t, text) = pooling_model
    mask = np.ones(text.shape[:2], bool)
    mask[1, 2:] = False
    mean = np.stack([text[0].mean(0), text[1, :2].mean(0)])
    apply = jax.jit(model.apply)
    np.testing.assert_allclose(np.asarray(apply({"params": params}, x, t, text, mask)),
                               np.asarray(apply({"params": params}, x, t, text, mask, pooled=mean)),
                               rtol=1e-5, atol=1e-4)  # outputs up to ~20: fp32 sums in another order
    narrow = model.clone(pooled_projection_dim=12)
    shapes = jax.eval_shape(narrow.init, jax.random.key(0), x, t, text, mask)["params"]  # init only needs shapes
    assert nn.unbox(shapes)["pooled_in"]["in_layer"]["kernel"].shape == (12, 32)
    with pytest.raises(ValueError, match="pooled_projection_dim 12 == context_in_dim 24"):
        jax.eval_shape(narrow.apply, {"params": shapes}, x, t, text, mask)


def _traced(model, params, inputs, **kw):
    """One jitted forward: its block calls in running order (block params, image tokens in, text tokens in, image
    tokens out, text tokens out) and what it sowed into "intermediates"."""
    return block_calls(model, params, inputs, JointBlock,
                       lambda block_params, args, out: (block_params, *args[0], *out[0]), **kw)


@pytest.fixture(scope="module")
def unrolled(pooling_model):
    """pooling_model with a third block, unrolled: blocks_0, blocks_1, final_block_0."""
    model, params, inputs = pooling_model
    model = model.clone(depth=3, scan_layers=False)
    fresh = jax.jit(model.init)(jax.random.key(0), *inputs, np.ones(inputs[2].shape[:2], bool))["params"]
    rng = np.random.default_rng(2)
    return model, jax.tree.map(lambda p: 0.3 * rng.standard_normal(p.shape, np.float32), nn.unbox(fresh)), inputs


def test_routing_runs_every_block_once_and_routes_image_tokens_only(unrolled):
    """TREAD over blocks 1..2 (a uniform block and the last one): each block runs once, in order, on its own
    params; inside the range it sees the kept image tokens and the whole text stream."""
    model, params, (x, t, text) = unrolled
    mask = np.ones(text.shape[:2], bool)
    routed = model.clone(routing="tread", route_start=1, route_end=2, route_rate=0.5)
    calls, _ = _traced(routed, params, (x, t, text, mask), route_rng=jax.random.key(3))
    names = ["blocks_0", "blocks_1", "final_block_0"]
    assert_blocks_ran(calls, params, names)
    n = (x.shape[1] // 2) * (x.shape[2] // 2)
    kept = routing.choose_kept(jax.random.key(3), x.shape[0], n, 0.5)
    assert calls[0][1].shape[1] == n and kept.shape == (x.shape[0], n // 2)
    np.testing.assert_array_equal(calls[1][1], routing.gather_tokens(calls[0][3], kept))
    np.testing.assert_array_equal(calls[2][1], calls[1][3])
    for previous, call in zip(calls, calls[1:]):
        np.testing.assert_array_equal(call[2], previous[4])  # the text stream, never routed


@pytest.mark.parametrize("layer", [0, 2])  # a uniform block, and the last one
def test_capture_takes_the_image_tokens_leaving_a_block(unrolled, layer):
    model, params, (x, t, text) = unrolled
    calls, intermediates = _traced(model.clone(capture_layer=layer), params,
                                   (x, t, text, np.ones(text.shape[:2], bool)))
    assert len(calls) == 3
    np.testing.assert_array_equal(intermediates["hidden"][0], calls[layer][3])


def test_every_param_has_logical_axis_names():
    model = MMDiT(in_channels=4, patch_size=2, context_in_dim=8, pooled_projection_dim=6, hidden_size=32,
                  num_heads=2, depth=3, qk_norm=True, sample_size=4, pos_embed_max_size=4)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 4, 4, 4)), jnp.zeros(1),
                               jnp.zeros((1, 2, 8)), jnp.ones((1, 2), bool), pooled=jnp.zeros((1, 6)))
    is_leaf = lambda x: isinstance(x, nn.Partitioned)
    leaves = jax.tree_util.tree_leaves_with_path(variables["params"], is_leaf=is_leaf)
    assert leaves and all(isinstance(leaf, nn.Partitioned) for _, leaf in leaves)
    stacked = [leaf for path, leaf in leaves if path[0].key in ("blocks", "final_block")]
    assert stacked and all(leaf.names[0] == "layers" for leaf in stacked)


@pytest.mark.parametrize("field, value, message", [
    ("dual_attention_layers", [0], "dual_attention_layers=\\[0\\] \\(SD3.5's"),
    ("qk_norm", "layer_norm", "qk_norm='layer_norm' is not supported"),
    ("caption_projection_dim", 48, "caption_projection_dim=48 is not supported"),
    ("out_channels", 8, "out_channels=8 != in_channels=4"),
])
def test_unsupported_configs_name_the_field(field, value, message):
    with pytest.raises(ConfigError, match=message):
        sd3_weights.model_fields(dict(CONFIGS["patch2-depth2"], **{field: value}))


def test_bad_tensors_and_exports_name_the_problem():
    cfg = CONFIGS["patch2-depth2"]
    torch_model = reference_sd3(cfg)
    tensors = _state_dict(torch_model)
    model = MMDiT(**sd3_weights.model_fields(cfg))
    deeper = model.clone(depth=3)
    with pytest.raises(ConfigError, match="has no tensor 'transformer_blocks.2.attn.to_q.weight'"):
        sd3_weights.params_from_state_dict(tensors, deeper)
    with pytest.raises(ConfigError, match=r"'transformer_blocks.0.norm1_context.linear.weight' has shape \(192, 32\), "
                                          r"this MMDiT config needs \(64, 32\)"):  # block 0 would be the last
        sd3_weights.params_from_state_dict(tensors, model.clone(depth=1))
    with pytest.raises(ConfigError, match=r"'pos_embed.proj.weight' has shape \(32, 4, 2, 2\), this MMDiT config "
                                          r"needs \(32, 3, 2, 2\)"):
        sd3_weights.params_from_state_dict(tensors, model.clone(in_channels=3))
    with pytest.raises(ConfigError, match="'pos_embed.pos_embed' is not the sin-cos table"):
        sd3_weights.params_from_state_dict(tensors, model.clone(sample_size=16))
    with pytest.raises(ConfigError, match="mlp_ratio 4; this model has 2.0"):
        sd3_weights.diffusers_config(model.clone(mlp_ratio=2.0))


def test_image_beyond_the_position_table_is_an_error():
    model = MMDiT(in_channels=4, patch_size=2, context_in_dim=8, pooled_projection_dim=8, hidden_size=32,
                  num_heads=2, depth=1, sample_size=8, pos_embed_max_size=4)
    with pytest.raises(ValueError, match="image 8x10 is over pos_embed_max_size 4 patches of 2"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 10, 4)), jnp.zeros((1,)),
                       jnp.zeros((1, 3, 8)), jnp.ones((1, 3), bool))
