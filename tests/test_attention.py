"""Attention implementations: flash (key tiles, online softmax, recomputing backward) and splash (run in
Pallas' interpreter on CPU) equal the XLA path in values and gradients, alone and split over a mesh; each is
accepted only where it runs."""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import shapes_tiny
from conftest import env_with_devices
from t2ijax.config import validate
from t2ijax.errors import ConfigError
from t2ijax.models.build import attention_for
from t2ijax.models.flash import flash_attention
from t2ijax.models.layers import masked_attention

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _inputs(batch=2, image=128, text=16, heads=2, dim=32, dtype=jnp.float32):
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((batch, n, heads, dim)), dtype)
               for n in (image, text + image, text + image))
    mask = np.ones((batch, text + image), bool)
    mask[0, 5:text] = False  # the first caption has 5 real tokens
    return q, k, v, jnp.asarray(mask)


def _loss_and_grads(implementation, q, k, v, mask):
    # weighted, so that the gradient reaching the output is not the output itself
    weights = jnp.linspace(-1, 2, q.size).reshape(q.shape)
    loss = lambda q, k, v: jnp.sum(weights * masked_attention(q, k, v, mask, implementation).astype(jnp.float32))
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)


def _flash_loss_and_grads(tile, q, k, v, mask):
    weights = jnp.linspace(-1, 2, q.size).reshape(q.shape)
    loss = lambda q, k, v: jnp.sum(weights * flash_attention(q, k, v, mask, tile).astype(jnp.float32))
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)


def _assert_close(got, want, rtol, atol):
    (loss, grads), (ref_loss, ref_grads) = got, want
    np.testing.assert_allclose(loss, ref_loss, rtol=rtol)
    for g, ref in zip(grads, ref_grads):
        assert g.dtype == ref.dtype
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(ref, np.float32), atol=atol, rtol=rtol)


@pytest.mark.parametrize("tile", [512, 64, 48])  # one tile; 3 tiles; 3 full and a ragged one of 12 keys
@pytest.mark.parametrize("image, text", [(128, 16), (40, 24)])  # queries over more keys: 128 of 144, 40 of 64
def test_flash_equals_xla_in_values_and_gradients_with_padded_text(tile, image, text):
    inputs = _inputs(batch=3, image=image, text=text, heads=3)
    _assert_close(_flash_loss_and_grads(tile, *inputs), _loss_and_grads("xla", *inputs), rtol=1e-5, atol=1e-6)


def test_flash_averages_a_query_whose_keys_are_all_padding_as_xla_does():
    q, k, v, mask = _inputs(image=40, text=8)
    mask = mask.at[1].set(False)  # the second example has no key at all
    for tile in (512, 16):
        _assert_close(_flash_loss_and_grads(tile, q, k, v, mask), _loss_and_grads("xla", q, k, v, mask),
                      rtol=1e-5, atol=1e-6)


def test_flash_in_bfloat16_stays_bfloat16_and_close_to_xla():
    inputs = _inputs(dtype=jnp.bfloat16)
    out = masked_attention(*inputs, "flash")
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(masked_attention(*inputs, "xla"), np.float32),
                               atol=2e-2)
    _assert_close(_loss_and_grads("flash", *inputs), _loss_and_grads("xla", *inputs), rtol=2e-2, atol=5e-2)


def test_splash_equals_xla_with_padded_text():
    inputs = _inputs()
    (loss, grads), (ref_loss, ref_grads) = _loss_and_grads("splash", *inputs), _loss_and_grads("xla", *inputs)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    for g, ref in zip(grads, ref_grads):
        np.testing.assert_allclose(g, ref, atol=1e-5, rtol=1e-4)


ON_A_MESH = textwrap.dedent("""
    import sys, jax, numpy as np, flax.linen as nn
    sys.path.insert(0, "tests")
    from test_attention import _inputs, _loss_and_grads, masked_attention
    from t2ijax import sharding
    from configs import base
    mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2))
    inputs = _inputs(batch=4, heads=4)
    with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.logical_rules(base.get_config().sharding_rules)):
        (loss, grads), (ref_loss, ref_grads) = _loss_and_grads("splash", *inputs), _loss_and_grads("xla", *inputs)
        assert "shard_map" in str(jax.make_jaxpr(lambda *a: masked_attention(*a, "splash"))(*inputs))
        flash_loss, flash_grads = _loss_and_grads("flash", *inputs)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    for g, ref in zip(grads, ref_grads):
        np.testing.assert_allclose(g, ref, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(flash_loss, ref_loss, rtol=1e-5)
    for g, ref in zip(flash_grads, ref_grads):
        np.testing.assert_allclose(g, ref, atol=1e-5, rtol=1e-4)
""")


def test_splash_and_flash_split_over_data_fsdp_and_tensor_equal_xla():
    env = env_with_devices(8)
    subprocess.run([sys.executable, "-c", ON_A_MESH], cwd=REPO, env=env, check=True, timeout=300)


def test_attention_implementations_are_checked_against_the_backend_and_tokens():
    c = shapes_tiny.get_config()  # 32 px, patch 4: 64 image tokens
    c.model.attention_impl = "splash"
    with pytest.raises(ConfigError, match="'splash' needs a multiple of 128 query tokens, this config trains at "
                                          "32x32 px with 64;"):
        validate(c, num_devices=1)
    c.model.patch_size = 2  # 256 tokens
    validate(c, num_devices=1, platform="tpu")
    c.resolution.buckets = True  # 24 x 42 px: 12 x 21 = 252 tokens
    with pytest.raises(ConfigError, match="trains at 24x42 px with 252"):
        validate(c, num_devices=1, platform="tpu")
    c.resolution.buckets = False
    with pytest.raises(ConfigError, match="'splash' runs only on TPUs and this backend is gpu; use xla"):
        validate(c, num_devices=1, platform="gpu")
    c.model.name = "mmdit"  # joint attention: 256 image + 32 text query tokens
    with pytest.raises(ConfigError, match="with 288 \\(image and text tokens: its attention is joint\\)"):
        validate(c, num_devices=1, platform="tpu")
    c.text_encoder.max_length = 128
    validate(c, num_devices=1, platform="tpu")
    c.model.patch_size = 4  # 64 image + 64 text tokens tile, the last block's image queries alone do not
    c.text_encoder.max_length = 64
    with pytest.raises(ConfigError, match="with 64 "):
        validate(c, num_devices=1, platform="tpu")
    c.model.update(name="uvit", patch_size=2)
    c.text_encoder.max_length = 128  # and a time token
    with pytest.raises(ConfigError, match="with 385 "):
        validate(c, num_devices=1, platform="tpu")


def test_auto_attention_picks_the_backends_kernel_where_it_applies():
    c = shapes_tiny.get_config()  # 32 px, patch 4: 64 image tokens; float32
    assert c.model.attention_impl == "auto"
    assert [attention_for(c, platform) for platform in ("cpu", "gpu", "tpu")] == ["flash", "xla", "xla"]
    c.model.update(patch_size=2, dtype="bfloat16")  # 256 tokens
    assert [attention_for(c, platform) for platform in ("cpu", "gpu", "tpu")] == ["flash", "cudnn", "splash"]
    c.resolution.buckets = True  # a 24 x 42 px bucket: 252 tokens, which splash cannot tile
    assert attention_for(c, "tpu") == "xla"
    c.resolution.buckets = False
    c.model.name = "flux"  # the queries hold the 32 text tokens too: 288
    assert attention_for(c, "tpu") == "xla" and attention_for(c, "tpu", image_tokens=[224]) == "splash"
    c.model.name = "dit_cross"  # image queries only
    assert attention_for(c, "tpu") == "splash"
    c.model.attention_impl = "xla"
    assert attention_for(c, "gpu") == "xla"
    validate(c, num_devices=1, platform="gpu")
