"""Position encodings (model.pos_embed), resolution conditioning (model.resolution_cond) and sampling at
any size: RoPE positions on non-square grids, the normalized and learned variants against the reference
grid, the size signal reaching the output, a train step per variant, and the size and config errors."""
import itertools
import json
import os
import subprocess
import sys
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from configs import shapes_tiny
from conftest import tiny_config
from t2ijax.config import validate
from t2ijax.diffusion.timesteps import time_shift
from t2ijax.errors import ConfigError
from t2ijax.interop.diffusers_prx import prx_to_diffusers
from t2ijax.interop.finetune import resolve_init_from
from t2ijax.models.build import build_model, latent_size, num_image_tokens, position_grid
from t2ijax.models.layers import axial_rope, normalized_rope_step
from t2ijax.models.prx import PRX, LearnedPositions
from t2ijax.training import state as train_state
from t2ijax.training.restore import RestoredRun
from t2ijax.training.step import make_train_step

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONDS = ("none", "tokens", "vec")
G = 4  # reference token grid side of the small models here


def _prx(pos_embed="rope_2d", cond="none", **kw):
    return PRX(in_channels=3, patch_size=2, context_in_dim=8, hidden_size=16, num_heads=2, depth=1, mlp_ratio=2,
               pos_embed=pos_embed, pos_grid=G, resolution_embeds=cond == "vec", resolution_tokens=cond == "tokens",
               **kw)


def _inputs(h, w, x=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, h, w, 3)) if x is None else x
    text = rng.normal(size=(2, 5, 8))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    return jnp.asarray(x, jnp.float32), jnp.array([0.3, 0.8]), jnp.asarray(text, jnp.float32), jnp.asarray(mask)


def _random_params(model):
    """Random values everywhere (a fresh PRX predicts 0: adaLN-Zero), in the shapes model.init gives."""
    shapes = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), *_inputs(2 * G, 2 * G))["params"])
    noise = np.random.default_rng(1)
    return jax.tree.map(lambda p: 0.3 * noise.normal(size=p.shape).astype(np.float32), shapes)


def _apply(model, params, *inputs):
    return jax.jit(model.apply)({"params": params}, *inputs)


def _angles(rows, cols, axes_dim, theta):
    """Expected rotation angles: the first axes_dim[0] // 2 pairs at the row position, the rest at the column's."""
    omega = lambda d: 1.0 / theta ** (np.arange(0, d, 2) / d)
    return np.concatenate([rows[:, None] * omega(axes_dim[0]), cols[:, None] * omega(axes_dim[1])], axis=1)


def test_rope_rows_follow_the_row_index_and_columns_the_column_index_on_a_3x5_grid():
    cos, sin = axial_rope(3, 5, (4, 8), 100.0)
    rows, cols = np.repeat(np.arange(3), 5), np.tile(np.arange(5), 3)  # row-major tokens
    expected = _angles(rows, cols, (4, 8), 100.0)
    assert cos.shape == (15, 6)
    np.testing.assert_allclose(cos, np.cos(expected), atol=1e-6)
    np.testing.assert_allclose(sin, np.sin(expected), atol=1e-6)


def test_normalized_rope_is_integer_rope_on_the_reference_grid_and_half_steps_at_twice_its_side():
    assert normalized_rope_step(G, G, G) == 1.0
    for a, b in zip(axial_rope(G, G, (4, 4), 1e4, normalized_rope_step(G, G, G)), axial_rope(G, G, (4, 4), 1e4)):
        np.testing.assert_array_equal(a, b)
    assert normalized_rope_step(2 * G, 2 * G, G) == 0.5
    cos, _ = axial_rope(2 * G, 2 * G, (4, 4), 1e4, 0.5)
    rows, cols = np.repeat(np.arange(2 * G), 2 * G), np.tile(np.arange(2 * G), 2 * G)
    np.testing.assert_allclose(cos, np.cos(_angles(rows / 2, cols / 2, (4, 4), 1e4)), atol=1e-6)
    for grid_h, grid_w in ((2, 8), (8, 16), (3, 5)):  # every grid spans G x G's area, at its own aspect ratio
        step = normalized_rope_step(grid_h, grid_w, G)
        assert grid_h * step * grid_w * step == pytest.approx(G * G)


def test_learned_table_is_resized_bilinearly_to_a_non_square_grid():
    positions = LearnedPositions(G, 16)
    table = positions.init(jax.random.PRNGKey(0), G, G)["params"]["table"]
    assert nn.unbox(table).shape == (G, G, 16) and float(jnp.std(nn.unbox(table))) == pytest.approx(0.02, rel=0.2)
    table = np.array(nn.unbox(table))
    resized = np.asarray(positions.apply({"params": {"table": table}}, 3, 5)).reshape(3, 5, 16)
    reference = torch.nn.functional.interpolate(torch.from_numpy(table).permute(2, 0, 1)[None], (3, 5),
                                                mode="bilinear", align_corners=False)
    np.testing.assert_allclose(resized, reference[0].permute(1, 2, 0).numpy(), atol=1e-6)
    same = positions.apply({"params": {"table": table}}, G, G)
    np.testing.assert_array_equal(np.asarray(same).reshape(G, G, 16), table)


@pytest.mark.parametrize("cond", CONDS)
def test_rope_variants_run_at_square_and_non_square_sizes(cond):
    """rope_2d_normalized equals rope_2d on the reference grid and differs elsewhere (learned_absolute runs
    at these sizes in the next test)."""
    params = _random_params(_prx("rope_2d", cond))
    outputs = {}
    for pos_embed in ("rope_2d", "rope_2d_normalized"):
        for h, w in ((2 * G, 2 * G), (2 * G, 3 * G)):
            outputs[pos_embed, h, w] = out = _apply(_prx(pos_embed, cond), params, *_inputs(h, w))
            assert out.shape == (2, h, w, 3) and bool(jnp.all(jnp.isfinite(out)))
    gap = lambda h, w: float(jnp.abs(outputs["rope_2d", h, w] - outputs["rope_2d_normalized", h, w]).max())
    assert gap(2 * G, 2 * G) < 1e-6 and gap(2 * G, 3 * G) > 1e-3


@pytest.mark.parametrize("cond", CONDS)
def test_learned_positions_run_at_any_size_and_only_resolution_conditioning_tells_sizes_apart(cond):
    """A constant image with a zero position table and no text makes every image token the same, so each
    token's output is the same at any size unless the size itself conditions the model."""
    model = _prx("learned_absolute", cond)
    params = _random_params(model)
    params["pos_embed"]["table"] = np.zeros_like(params["pos_embed"]["table"])
    corner = {}
    for h, w in ((8, 8), (8, 16), (16, 8)):
        x, t, text, _ = _inputs(h, w, np.ones((2, h, w, 3)))
        out = _apply(model, params, x, t, text, jnp.zeros((2, 5), bool))
        assert out.shape == (2, h, w, 3) and bool(jnp.all(jnp.isfinite(out)))
        corner[h, w] = np.asarray(out[:, 0, 0])
    gaps = [np.abs(corner[a] - corner[b]).max() for a, b in itertools.combinations(corner, 2)]
    if cond == "none":
        assert max(gaps) < 1e-5
    else:
        assert min(gaps) > 1e-3  # (8, 16) and (16, 8) too: height and width are told apart


TRAINED = {"rope_2d_normalized-tokens": ("rope_2d_normalized", "tokens", ("height_token", "width_token")),
           "learned_absolute-vec": ("learned_absolute", "vec", ("pos_embed", "resolution_embedder"))}


@pytest.mark.parametrize("pos_embed,cond,new_params", TRAINED.values(), ids=TRAINED.keys())
def test_one_train_step_on_a_non_square_batch_without_nan(pos_embed, cond, new_params):
    config = tiny_config("unused")
    config.model.update(pos_embed=pos_embed, resolution_cond=cond, depth=1)
    validate(config, num_devices=1)
    model = build_model(config, 3, 8)
    assert model.pos_grid == 32 // 4  # data.resolution 32, pixel space, patch 4
    params = _random_params(model)
    optimizer = optax.adamw(1e-3)
    state = train_state.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                                   rng=jax.random.PRNGKey(0))
    step = make_train_step(model, optimizer, optax.constant_schedule(1e-3), config, jnp.zeros((5, 8)),
                           jnp.zeros((5,), bool), shift=1.0)
    x0, _, text, mask = _inputs(32, 48)
    new, metrics = jax.jit(step)(state, {"x0": x0, "text": text, "text_mask": mask})
    assert bool(jnp.isfinite(metrics["loss"])) and bool(jnp.isfinite(metrics["grad_norm"])), metrics
    assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(new.params))
    for name in new_params:  # the new parameters learn
        assert any(bool(jnp.any(a != b)) for a, b in zip(jax.tree.leaves(new.params[name]),
                                                          jax.tree.leaves(params[name]))), name


def test_pos_grid_defaults_to_the_training_token_grid():
    config = shapes_tiny.get_config()
    assert position_grid(config) == 32 // 4
    config.model.pos_grid = 5
    assert position_grid(config) == 5


def test_sizes_map_to_latents_and_tokens_and_bad_sizes_name_the_multiple():
    config = shapes_tiny.get_config()  # pixel space, patch 4
    assert latent_size(config, 32, 64) == (32, 64)
    assert num_image_tokens(config.model, 32, 64) == 8 * 16
    for height, width in ((30, 32), (32, 2), (0, 32)):
        with pytest.raises(ConfigError, match="use multiples of 4 pixels"):
            latent_size(config, height, width)


def test_restored_generator_samples_the_requested_size_with_its_time_shift():
    config = shapes_tiny.get_config()
    config.diffusion.shift_mode = "resolution"
    run = RestoredRun(config, model=None, space=types.SimpleNamespace(params={}, channels=3), state=None,
                      image_shape=(32, 32, 3), mesh=None)
    sampler, negative = config.sampler, (np.zeros((5, 8)), np.ones(5, bool))
    square, wide = run.generator(sampler, *negative), run.generator(sampler, *negative, size=(32, 64))
    assert square.image_shape == (32, 32, 3) and wide.image_shape == (32, 64, 3)
    assert square.shift == time_shift(config.diffusion, 64)
    assert wide.shift == time_shift(config.diffusion, 128) != square.shift


def test_sample_cli_refuses_a_size_off_the_patch_grid(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(shapes_tiny.get_config().to_dict()))
    result = subprocess.run([sys.executable, "-m", "t2ijax.sample", f"--workdir={tmp_path}", "--height=30",
                             "--prompt=a red circle"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: image size 30x32 (height x width) does not split into whole 4x4 patches of the autoencoder's "
        "1x-downsampled latents; use multiples of 4 pixels")


def test_negative_pos_grid_is_a_config_error():
    config = shapes_tiny.get_config()
    config.model.pos_grid = -1
    with pytest.raises(ConfigError, match=r"config.model.pos_grid=-1 must be >= 0"):
        validate(config, num_devices=1)


@pytest.mark.parametrize("pos_embed,cond", [("rope_2d_normalized", "none"), ("learned_absolute", "none"),
                                            ("rope_2d", "tokens")])
def test_diffusers_export_refuses_what_diffusers_prx_lacks(tmp_path, pos_embed, cond):
    with pytest.raises(ConfigError, match="cannot be exported"):
        prx_to_diffusers(_prx(pos_embed, cond), {}, str(tmp_path))


@pytest.mark.parametrize("field,value", [("pos_embed", "learned_absolute"), ("resolution_cond", "tokens")])
def test_init_from_refuses_parameters_a_prx_checkpoint_lacks(field, value, tmp_path):
    from prx_reference import reference_prx

    reference_prx(dict(in_channels=3, patch_size=2, context_in_dim=8, hidden_size=16, num_heads=2,
                       depth=1, axes_dim=[4, 4])).save_pretrained(tmp_path)
    config = shapes_tiny.get_config()
    config.init_from = str(tmp_path)
    config.model[field] = value
    with pytest.raises(ConfigError, match="add parameters a PRX checkpoint does not have"):
        resolve_init_from(config)
