"""Flux against diffusers' FluxTransformer2DModel (tiny random configs, non-square latents, with and without
guidance, both depth splits), exact weight round trips, t2ijax's text mask and pooling, the block stacks as
routing and capture cut them, and bad input."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers.models.transformers.transformer_flux import FluxTransformer2DModel

from conftest import assert_blocks_ran, block_calls
from flux_reference import reference_flux, reference_forward
from t2ijax.errors import ConfigError
from t2ijax.interop import flux_weights, from_diffusers, to_diffusers
from t2ijax.models.flux import DoubleStreamBlock, Flux, SingleStreamBlock
from t2ijax.models.layers import masked_mean
from t2ijax.techniques import routing

CONFIGS = {  # diffusers' config.json fields; in_channels = 4 x the latent channels
    "guidance, 1 double + 2 single": dict(in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=16,
                                          num_attention_heads=2, joint_attention_dim=24, pooled_projection_dim=12,
                                          guidance_embeds=True, axes_dims_rope=(4, 6, 6)),
    "no guidance, 2 double + 1 single": dict(in_channels=8, num_layers=2, num_single_layers=1, attention_head_dim=16,
                                             num_attention_heads=3, joint_attention_dim=20, pooled_projection_dim=20,
                                             guidance_embeds=False, axes_dims_rope=(2, 6, 8)),
}
B, L = 3, 5
SIZES = ((8, 12), (6, 4))  # latent sides: even, non-square


def _inputs(cfg, size, seed=0):
    """x, t, text, all-True mask, pooled, guidance (None without guidance_embeds)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, *size, cfg["in_channels"] // 4)).astype(np.float32)
    t = rng.uniform(size=B).astype(np.float32)
    text = rng.standard_normal((B, L, cfg["joint_attention_dim"])).astype(np.float32)
    pooled = rng.standard_normal((B, cfg["pooled_projection_dim"])).astype(np.float32)
    guidance = rng.uniform(1.0, 5.0, size=B).astype(np.float32) if cfg.get("guidance_embeds") else None
    return x, t, text, np.ones((B, L), bool), pooled, guidance


def _apply(model, params, x, t, text, mask, pooled=None, guidance=None):
    return np.asarray(jax.jit(model.apply)({"params": params}, x, t, text, mask, pooled=pooled, guidance=guidance))


@pytest.fixture(scope="module", params=list(CONFIGS))
def reference(request, tmp_path_factory):
    """(diffusers config, the torch model, the directory it is saved in)."""
    cfg = CONFIGS[request.param]
    torch_model = reference_flux(cfg)
    directory = tmp_path_factory.mktemp("flux")
    torch_model.save_pretrained(directory)
    return cfg, torch_model, str(directory)


def test_matches_diffusers(reference):
    """Scanned on one config, unrolled on the other (one compile each: this CPU is slow to compile)."""
    cfg, torch_model, directory = reference
    scan = cfg["guidance_embeds"]
    model, params = from_diffusers(directory, scan_layers=scan)
    x, t, text, mask, pooled, guidance = _inputs(cfg, SIZES[scan])
    # atol: torch's and XLA's float32 exp differ by an ulp in 17 of the 128 sinusoid frequencies, which
    # guidance * 1000 (up to 5000 rad) amplifies to ~2e-4 in its embedding (5e-6 at the output; 6e-7 without).
    np.testing.assert_allclose(_apply(model, params, x, t, text, mask, pooled, guidance),
                               reference_forward(torch_model, x, t, text, pooled, guidance), rtol=1e-5,
                               atol=1e-5 if guidance is not None else 1e-6)


def test_export_loads_in_diffusers_and_round_trips_exactly(reference, tmp_path):
    cfg, torch_model, directory = reference
    model, params = from_diffusers(directory, scan_layers=False)
    to_diffusers(model, params, tmp_path / "export")
    reloaded = FluxTransformer2DModel.from_pretrained(tmp_path / "export").eval()
    assert {k: reloaded.config[k] for k in cfg} == {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}
    original = torch_model.state_dict()
    assert reloaded.state_dict().keys() == original.keys()
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    x, t, text, _, pooled, guidance = _inputs(cfg, SIZES[0], seed=1)
    np.testing.assert_array_equal(reference_forward(reloaded, x, t, text, pooled, guidance),
                                  reference_forward(torch_model, x, t, text, pooled, guidance))

    _, again = from_diffusers(str(tmp_path / "export"), scan_layers=False)
    jax.tree.map(np.testing.assert_array_equal, again, params)
    scanned, scanned_params = from_diffusers(str(tmp_path / "export"))
    tensors = flux_weights.state_dict_from_params(scanned_params, scanned)
    assert tensors.keys() == original.keys()
    for name, tensor in tensors.items():
        np.testing.assert_array_equal(tensor, original[name].numpy())


@pytest.fixture(scope="module")
def plain():
    """The guidance-free config (pooled_projection_dim == joint_attention_dim): its model and imported params,
    unrolled, and the model's apply jitted once on them."""
    cfg = CONFIGS["no guidance, 2 double + 1 single"]
    torch_model = reference_flux(cfg)
    model = Flux(**flux_weights.model_fields(cfg), scan_layers=False)
    params = flux_weights.params_from_state_dict({k: v.numpy() for k, v in torch_model.state_dict().items()}, model)
    apply = jax.jit(lambda *inputs, **kw: model.apply({"params": params}, *inputs, **kw))
    return cfg, model, params, lambda *inputs, **kw: np.asarray(apply(*inputs, **kw))


def test_padded_text_tokens_do_not_reach_the_image(plain):
    cfg, _, _, apply = plain
    x, t, text, mask, _, _ = _inputs(cfg, SIZES[0])
    mask[1, 3:] = False
    mask[2, 1:] = False
    other = text.copy()
    other[~mask] = np.random.default_rng(5).standard_normal((int((~mask).sum()), text.shape[-1]))
    np.testing.assert_array_equal(apply(x, t, other, mask), apply(x, t, text, mask))
    everything = np.ones_like(mask)  # unmasked, the same tokens change the image: the mask is what hides them
    change = np.abs(apply(x, t, other, everything) - apply(x, t, text, everything))
    assert (change[1:].max(axis=(1, 2, 3)) > 1e-3).all()


def test_pooled_defaults_to_the_mean_of_the_real_text_tokens(plain):
    cfg, _, _, apply = plain
    x, t, text, mask, pooled, _ = _inputs(cfg, SIZES[0])
    mask[0, 2:] = False
    pooled_default = apply(x, t, text, mask)
    np.testing.assert_allclose(pooled_default, apply(x, t, text, mask, pooled=masked_mean(text, mask)), atol=1e-6,
                               rtol=0)
    assert np.abs(apply(x, t, text, mask, pooled=pooled) - pooled_default).max() > 1e-3


def _traced(model, params, inputs, **kw):
    """One jitted forward of an unrolled model: its block calls in running order (block params, image tokens in,
    rope, key mask, image tokens out) and what it sowed into "intermediates"."""
    return block_calls(model, params, inputs, DoubleStreamBlock | SingleStreamBlock,
                       lambda block_params, args, out: (block_params, args[0][0], args[3], args[2], out[0][0]), **kw)


def test_routing_cuts_across_the_double_and_single_stacks(plain):
    """TREAD over blocks 1..2 (the second double-stream block and the single-stream one): every block runs once,
    in order, on its own params; inside the range it sees the kept image tokens with their own RoPE rows."""
    cfg, model, params, _ = plain
    x, t, text, mask, _, _ = _inputs(cfg, SIZES[0])
    mask[1, 2:] = False
    routed = model.clone(routing="tread", route_start=1, route_end=2, route_rate=0.5)
    calls, _ = _traced(routed, params, (x, t, text, mask), route_rng=jax.random.key(3))
    names = ["double_blocks_0", "double_blocks_1", "single_blocks_0"]
    assert_blocks_ran(calls, params, names)
    n = (SIZES[0][0] // 2) * (SIZES[0][1] // 2)
    kept = routing.choose_kept(jax.random.key(3), B, n, 0.5)
    assert calls[0][1].shape[1] == n and kept.shape == (B, n // 2)
    np.testing.assert_array_equal(calls[1][1], routing.gather_tokens(calls[0][4], kept))
    np.testing.assert_array_equal(calls[2][1], calls[1][4])  # the single block takes the double block's tokens
    full_cos, full_sin = calls[0][2]
    for _, _, (cos, sin), key_mask, _ in calls[1:]:
        np.testing.assert_array_equal(cos, full_cos[kept])
        np.testing.assert_array_equal(sin, full_sin[kept])
        np.testing.assert_array_equal(key_mask, np.concatenate([mask, np.ones((B, n // 2), bool)], axis=1))


@pytest.mark.parametrize("layer", [0, 1])  # the stack cut inside the double blocks, and between the two stacks
def test_capture_takes_the_image_tokens_leaving_a_block(plain, layer):
    cfg, model, params, _ = plain
    calls, intermediates = _traced(model.clone(capture_layer=layer), params, _inputs(cfg, SIZES[1])[:4])
    assert len(calls) == 3
    np.testing.assert_array_equal(intermediates["hidden"][0], calls[layer][4])


@pytest.fixture(scope="module")
def scanned():
    """A scanned model with guidance, random params everywhere (adaLN-Zero's zeros included), and its inputs."""
    cfg = CONFIGS["guidance, 1 double + 2 single"]
    model = Flux(**flux_weights.model_fields(cfg))
    x, t, text, mask, pooled, guidance = _inputs(cfg, SIZES[1])
    mask[1, 2:] = False
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), x, t, text, mask)["params"])
    noise = np.random.default_rng(2)
    params = jax.tree.map(lambda p: (0.2 * noise.standard_normal(p.shape)).astype(np.float32), params)
    return model, params, (x, t, text, mask), dict(pooled=pooled, guidance=guidance)


def test_remat_keeps_the_gradients(scanned):
    model, params, inputs, conditioning = scanned
    grad = lambda m: jax.jit(jax.grad(lambda p: jnp.square(m.apply({"params": p}, *inputs, **conditioning)).mean()))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 grad(model.clone(remat_policy="dots"))(params), grad(model)(params))


def test_bf16_compute_stays_close_to_fp32(scanned):
    model, params, inputs, conditioning = scanned
    apply = lambda m: jax.jit(lambda p: m.apply({"params": p}, *inputs, **conditioning))(params)
    full, half = np.asarray(apply(model)), apply(model.clone(dtype=jnp.bfloat16))
    assert half.dtype == inputs[0].dtype
    assert np.abs(np.asarray(half) - full).max() < 0.05 * np.abs(full).max()


def test_every_param_has_logical_axis_names():
    model = Flux(in_channels=4, context_in_dim=8, pooled_projection_dim=6, hidden_size=32, num_heads=2, depth=3,
                 double_blocks=1, axes_dim=(4, 6, 6), guidance_embeds=True)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 4, 4, 4)), jnp.zeros(1),
                               jnp.zeros((1, 2, 8)), jnp.ones((1, 2), bool))
    leaves = jax.tree.leaves(variables["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(leaf, nn.Partitioned) for leaf in leaves)
    stacked = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(
        variables["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned)) if "blocks" in str(path[0])]
    assert stacked and all(leaf.names[0] == "layers" for leaf in stacked)


@pytest.mark.parametrize("fields, kwargs, message", [
    (dict(guidance_embeds=True), {}, "embeds a guidance scale .*: pass guidance"),
    ({}, dict(guidance=np.ones(B, np.float32)), "guidance given to a Flux without guidance_embeds"),
    (dict(pooled_projection_dim=7), {}, r"pooled_projection_dim \(7\) equals context_in_dim \(20\)"),
])
def test_init_needs_no_conditioning_but_apply_does(plain, fields, kwargs, message):
    cfg, model, _, _ = plain
    model = model.clone(**fields)
    x, t, text, mask, _, _ = _inputs(cfg, SIZES[1])
    variables = jax.eval_shape(model.init, jax.random.key(0), x, t, text, mask)  # traced only: errors come first
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(lambda v: model.apply(v, x, t, text, mask, **kwargs), variables)


@pytest.mark.parametrize("fields, message", [
    (dict(axes_dim=(4, 6, 8)), r"axes_dim \(4, 6, 8\) must be three even sizes summing to head_dim 16"),
    (dict(axes_dim=(16,)), r"axes_dim \(16,\) must be three even sizes"),
    (dict(double_blocks=4), r"double_blocks 4 must be within 0..depth \(3\)"),
    (dict(num_heads=5), "hidden_size 48 not divisible by num_heads 5"),
    (dict(remat_policy="most"), "remat_policy 'most' not in none, full"),
])
def test_bad_fields_are_one_clear_error(plain, fields, message):
    cfg, model, _, _ = plain
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(model.clone(**fields).init, jax.random.key(0), *_inputs(cfg, SIZES[1])[:4])


def test_diffusers_configs_it_cannot_hold_are_config_errors():
    cfg = CONFIGS["no guidance, 2 double + 1 single"]
    for change, message in ((dict(patch_size=2), "patch_size=2 is not supported"),
                            (dict(in_channels=6), "in_channels=6 is not supported"),
                            (dict(out_channels=4), "out_channels=4 != in_channels=8 is not supported")):
        with pytest.raises(ConfigError, match=message):
            flux_weights.model_fields({**cfg, **change})
    model = Flux(**flux_weights.model_fields(cfg))
    for field, value in (("mlp_ratio", 3.0), ("patch_size", 1), ("theta", 500.0)):
        with pytest.raises(ConfigError, match=f"this model has {field}={value}, so it cannot be exported"):
            flux_weights.diffusers_config(model.clone(**{field: value}))


def test_a_state_dict_that_does_not_fit_names_the_tensor(plain):
    _, model, params, _ = plain
    tensors = flux_weights.state_dict_from_params(params, model)
    with pytest.raises(ConfigError, match="has no tensor 'transformer_blocks.1.attn.add_k_proj.bias'"):
        flux_weights.params_from_state_dict({k: v for k, v in tensors.items() if "1.attn.add_k_proj.bias" not in k},
                                            model)
    with pytest.raises(ConfigError, match="does not use, e.g. 'single_transformer_blocks.0."):
        flux_weights.params_from_state_dict(tensors, model.clone(depth=2))
    wide = dict(tensors, **{"single_transformer_blocks.0.proj_out.weight":
                            np.zeros((48, 48 + 4 * 48 + 1), np.float32)})
    with pytest.raises(ConfigError, match=r"'single_transformer_blocks.0.proj_out.weight\[:, 48:\]' has shape "
                                          r"\(48, 193\), this Flux config needs \(48, 192\)"):
        flux_weights.params_from_state_dict(wide, model)


def test_flux1_dev_at_full_size_has_diffusers_parameter_count():
    """FLUX.1-dev's config (19 + 38 blocks, width 3072, guidance): the same 11.9B parameters as diffusers' class
    (shapes only: traced on the Flax side, built on torch's meta device)."""
    model = Flux(**flux_weights.model_fields(dict(guidance_embeds=True)))
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 2, 2, 16)), jnp.zeros(1),
                            jnp.zeros((1, 1, 4096)), jnp.ones((1, 1), bool))
    with torch.device("meta"):
        reference = FluxTransformer2DModel(guidance_embeds=True)
    assert sum(x.size for x in jax.tree.leaves(shapes)) == sum(p.numel() for p in reference.parameters())
