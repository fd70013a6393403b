"""dit_cross (PixArt-alpha): parity with diffusers' PixArtTransformer2DModel, weights in and out, bad configs."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import PixArtTransformer2DModel

from conftest import denoiser_inputs
from pixart_reference import reference_forward, reference_pixart
from t2ijax.errors import ConfigError
from t2ijax.interop import pixart_weights
from t2ijax.interop.checkpoints import from_diffusers, to_diffusers
from t2ijax.models.dit_cross import DiTCross
from t2ijax.techniques import routing

CONFIGS = {  # PixArtTransformer2DModel arguments
    "patch2": dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, num_layers=2,
                   cross_attention_dim=16, caption_channels=12, sample_size=8, patch_size=2, interpolation_scale=1,
                   use_additional_conditions=False),
    "patch1+sigma": dict(num_attention_heads=4, attention_head_dim=4, in_channels=3, out_channels=6, num_layers=1,
                         cross_attention_dim=16, caption_channels=8, sample_size=6, patch_size=1,
                         interpolation_scale=0.5, use_additional_conditions=False),
    "patch2+default_scale": dict(num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=4,
                                 num_layers=3, cross_attention_dim=32, caption_channels=16, sample_size=12,
                                 patch_size=2, use_additional_conditions=False),
}
SIZES = {"sample_size": None, "non-square": (8, 12)}


def _inputs(cfg, size, batch=3, length=5, seed=0):
    return denoiser_inputs(batch, size or (cfg["sample_size"],) * 2, cfg["in_channels"], length,
                           cfg["caption_channels"], seed)


@pytest.fixture(scope="module", params=list(CONFIGS))
def saved(request, tmp_path_factory):
    cfg = CONFIGS[request.param]
    model = reference_pixart(cfg)
    directory = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(directory)
    return cfg, model, directory


def _image_half(cfg, out):
    """The reference's image prediction: its first in_channels (the rest is a learned sigma)."""
    return out[..., :cfg["in_channels"]]


@pytest.mark.parametrize("size", list(SIZES))
def test_import_matches_diffusers(saved, size):
    cfg, torch_model, directory = saved
    model, params = from_diffusers(str(directory))
    inputs = _inputs(cfg, SIZES[size])
    got = np.asarray(jax.jit(model.apply)({"params": params}, *map(jnp.asarray, inputs)))
    want = _image_half(cfg, reference_forward(torch_model, *inputs))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_export_loads_in_diffusers_and_round_trips_exactly(saved, tmp_path):
    cfg, torch_model, directory = saved
    model, params = from_diffusers(str(directory), scan_layers=False)
    to_diffusers(model, params, str(tmp_path / "export"))
    reloaded = PixArtTransformer2DModel.from_pretrained(tmp_path / "export").eval()
    original = torch_model.state_dict()
    for name, tensor in reloaded.state_dict().items():
        want = original[name]
        if name.startswith("proj_out") and cfg["out_channels"] != cfg["in_channels"]:  # the sigma half dropped
            p, c = cfg["patch_size"], cfg["in_channels"]
            want = want.reshape(p, p, 2 * c, -1)[:, :, :c].reshape(tensor.shape)
        assert torch.equal(tensor, want), name
    inputs = _inputs(cfg, SIZES["non-square"], seed=1)
    got, want = reference_forward(reloaded, *inputs), _image_half(cfg, reference_forward(torch_model, *inputs))
    if cfg["out_channels"] == cfg["in_channels"]:
        np.testing.assert_array_equal(got, want)
    else:  # the same products, but torch's matmul over half the outputs may sum them in another order
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)

    _, again = from_diffusers(str(tmp_path / "export"), scan_layers=False)
    jax.tree.map(np.testing.assert_array_equal, again, params)


def test_scanned_and_unrolled_blocks_agree(tmp_path):
    cfg = CONFIGS["patch2+default_scale"]
    reference_pixart(cfg).save_pretrained(tmp_path)
    directory = tmp_path
    inputs = _inputs(cfg, SIZES["non-square"], seed=2)
    outs = [jax.jit(model.apply)({"params": params}, *inputs) for model, params in
            (from_diffusers(str(directory)), from_diffusers(str(directory), scan_layers=False, remat_policy="full"))]
    np.testing.assert_allclose(*outs, rtol=1e-6, atol=1e-6)


def test_padded_text_tokens_do_not_matter():
    cfg = CONFIGS["patch2"]
    model = DiTCross(**pixart_weights.model_fields(cfg))
    x, t, text, mask = _inputs(cfg, SIZES["non-square"])
    params = jax.jit(model.init)(jax.random.key(0), x, t, text, mask)["params"]
    rng = np.random.default_rng(1)  # noise: the zero-initialised outputs would hide the text
    params = jax.tree.map(lambda p: p + 0.1 * rng.standard_normal(p.shape, np.float32), params)
    apply = jax.jit(model.apply)
    out = apply({"params": params}, x, t, text, mask)
    changed = np.where(mask[..., None], text, 100.0)
    np.testing.assert_array_equal(apply({"params": params}, x, t, changed, mask), out)
    assert not np.allclose(apply({"params": params}, x, t, text, np.ones_like(mask)), out)


def test_fresh_model_predicts_zero_and_takes_no_pooled_vector():
    cfg = CONFIGS["patch1+sigma"]
    model = DiTCross(**pixart_weights.model_fields(cfg))
    inputs = _inputs(cfg, SIZES["non-square"])
    params = jax.jit(model.init)(jax.random.key(0), *inputs)["params"]
    np.testing.assert_array_equal(jax.jit(model.apply)({"params": params}, *inputs), 0.0)
    with pytest.raises(ValueError, match="no pooled vector or guidance"):
        model.apply({"params": params}, *inputs, pooled=jnp.zeros((3, 8)))


@pytest.mark.parametrize("change, message", [
    (dict(use_additional_conditions=True), "use_additional_conditions"),
    (dict(use_additional_conditions=None, sample_size=128), "use_additional_conditions"),
    (dict(caption_channels=None), "without caption_channels"),
    (dict(out_channels=5), "out_channels=5"),
    (dict(cross_attention_dim=12), "cross_attention_dim=12"),
    (dict(norm_elementwise_affine=True), "norm_elementwise_affine=True"),
    (dict(activation_fn="gelu"), "activation_fn='gelu'"),
])
def test_unsupported_configs_are_named(change, message):
    with pytest.raises(ConfigError, match=message):
        pixart_weights.model_fields({**CONFIGS["patch2"], **change})


def test_export_refuses_what_diffusers_cannot_hold():
    model = DiTCross(**{**pixart_weights.model_fields(CONFIGS["patch2"]), "mlp_ratio": 2.0})
    with pytest.raises(ConfigError, match="4x MLP; this dit_cross has mlp_ratio=2"):
        pixart_weights.diffusers_config(model)


def test_missing_and_extra_tensors_are_named():
    cfg = CONFIGS["patch2+default_scale"]
    torch_model = reference_pixart(cfg)
    state = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    model = DiTCross(**pixart_weights.model_fields(cfg))
    with pytest.raises(ConfigError, match="has no tensor 'transformer_blocks.0.attn1.to_k.weight'"):
        pixart_weights.params_from_state_dict({k: v for k, v in state.items() if "0.attn1.to_k.w" not in k}, model)
    narrow = DiTCross(**{**pixart_weights.model_fields(cfg), "hidden_size": 24, "num_heads": 3})
    with pytest.raises(ConfigError, match=r"tensor 'pos_embed.proj.weight' has shape \(32, 16\), this DiTCross config "
                                          r"needs \(24, 16\)"):
        pixart_weights.params_from_state_dict(state, narrow)
    shallow = DiTCross(**{**pixart_weights.model_fields(cfg), "depth": cfg["num_layers"] - 1})
    with pytest.raises(ConfigError, match=f"does not use, e.g. 'transformer_blocks.{cfg['num_layers'] - 1}.*"
                                          "check num_layers"):
        pixart_weights.params_from_state_dict(state, shallow)


def test_every_param_has_logical_axis_names():
    model = DiTCross(**pixart_weights.model_fields(CONFIGS["patch2"]))
    variables = jax.eval_shape(model.init, jax.random.key(0), *_inputs(CONFIGS["patch2"], SIZES["non-square"]))
    leaves = jax.tree_util.tree_leaves_with_path(variables["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(leaf, nn.Partitioned) and len(leaf.names) == leaf.value.ndim for _, leaf in leaves)
    assert all(leaf.names[0] == "layers" for path, leaf in leaves if path[0].key == "blocks")


def test_tread_routes_image_tokens_and_capture_sees_them():
    cfg = CONFIGS["patch2+default_scale"]
    inputs = _inputs(cfg, SIZES["non-square"])
    plain = DiTCross(**pixart_weights.model_fields(cfg))
    params = jax.jit(plain.init)(jax.random.key(0), *inputs)["params"]
    rng = np.random.default_rng(1)  # noise: the zero-initialised outputs would hide the blocks
    params = jax.tree.map(lambda p: p + 0.1 * rng.standard_normal(p.shape, np.float32), params)
    routed = plain.clone(routing="tread", route_start=1, route_end=1, capture_layer=1)
    apply = lambda model, **kw: jax.jit(functools.partial(model.apply, mutable="intermediates", **kw))(
        {"params": params}, *inputs)
    want = apply(plain)[0]
    # TREAD without a route_rng is the plain model, to float rounding: the two programs fuse differently
    np.testing.assert_allclose(apply(routed)[0], want, rtol=1e-5, atol=1e-6)

    out, intermediates = apply(routed, route_rng=jax.random.key(3))
    b, h, w, _ = inputs[0].shape
    kept = routing.choose_kept(jax.random.key(3), b, (h // 2) * (w // 2), 0.5)
    np.testing.assert_array_equal(intermediates["intermediates"]["hidden_tokens"][0], kept)
    assert intermediates["intermediates"]["hidden"][0].shape == (*kept.shape, plain.hidden_size)
    assert np.isfinite(out).all() and not np.allclose(out, want)
