"""The precision policy: model.param_dtype stores params (so grads and optimizer state) in float32 or
bfloat16; model.dtype sets the matmuls; norms, softmax and RoPE stay float32 under both."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import base, shapes_tiny
from t2ijax.models.build import build_model
from t2ijax.training.optim import make_optimizer

POLICIES = {  # (model.dtype, model.param_dtype)
    "float32 master weights, bfloat16 compute": ("bfloat16", "float32"),
    "bfloat16 weights": ("bfloat16", "bfloat16"),
}


def _model(dtype, param_dtype):
    config = shapes_tiny.get_config()
    config.model.update(hidden_size=32, depth=2, num_heads=2, dtype=dtype, param_dtype=param_dtype)
    return build_model(config, in_channels=3, context_dim=8)


def _inputs():
    rng = np.random.default_rng(0)
    return (jnp.asarray(rng.normal(size=(2, 16, 16, 3)), jnp.float32), jnp.asarray([0.3, 0.8]),
            jnp.asarray(rng.normal(size=(2, 4, 8)), jnp.float32), jnp.asarray([[1, 1, 0, 0], [1, 1, 1, 0]], bool))


def _equations(jaxpr):
    """Every equation of `jaxpr` and of the jaxprs inside it (scan bodies, custom derivatives, ...)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for inner in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(inner, "jaxpr", inner)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


def _dtypes(jaxpr, primitive):
    """The input dtypes of each `primitive` equation."""
    return [tuple(v.aval.dtype for v in e.invars) for e in _equations(jaxpr) if e.primitive.name == primitive]


def _float_dtypes(tree):
    return {x.dtype for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


@pytest.mark.parametrize("policy", POLICIES)
def test_params_grads_and_optimizer_state_are_stored_in_param_dtype(policy):
    """Dtypes from jax.eval_shape: what the compiled step would hold, without compiling it."""
    dtype, param_dtype = POLICIES[policy]
    model = _model(dtype, param_dtype)
    inputs = _inputs()
    params = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), *inputs)["params"])
    loss = lambda p: jnp.mean(jnp.square(model.apply({"params": p}, *inputs)))
    grads = jax.eval_shape(jax.grad(loss), params)
    assert _float_dtypes(params) == _float_dtypes(grads) == {jnp.dtype(param_dtype)}
    shapes = {x.shape for x in jax.tree.leaves(params)}
    for name in ("adamw", "muon"):
        cfg = base.get_config().optim
        cfg.name = name
        optimizer, _ = make_optimizer(cfg, total_steps=10)
        state = jax.eval_shape(optimizer.init, params)
        # The moments, one per param (Muon's Newton-Schulz coefficients are float32 constants).
        moments = [x for x in jax.tree.leaves(state) if x.shape in shapes]
        assert moments and _float_dtypes(moments) == {jnp.dtype(param_dtype)}, name
        step = lambda g, s, p: optax.apply_updates(p, optimizer.update(g, s, p)[0])
        assert _float_dtypes(jax.eval_shape(step, grads, state, params)) == {jnp.dtype(param_dtype)}, name


@pytest.mark.parametrize("policy", POLICIES)
def test_matmuls_in_compute_dtype_norms_softmax_and_rope_in_float32(policy):
    dtype, param_dtype = POLICIES[policy]
    model = _model(dtype, param_dtype)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), *_inputs())["params"]
    jaxpr = jax.make_jaxpr(model.apply)({"params": params}, *_inputs()).jaxpr
    f32 = jnp.dtype(jnp.float32)
    matmuls = _dtypes(jaxpr, "dot_general")
    assert matmuls and all(d == (jnp.dtype(dtype),) * 2 for d in matmuls), matmuls
    # rsqrt: RMSNorm and LayerNorm statistics; reductions: their means and softmax's max and sum;
    # exp: softmax; cos, sin: RoPE's and the timestep embedding's angles.
    for primitive in ("rsqrt", "reduce_sum", "reduce_max", "exp", "cos", "sin"):
        found = _dtypes(jaxpr, primitive)
        assert found and all(d == (f32,) for d in found), (primitive, found)


def test_a_small_update_kept_by_float32_weights_is_rounded_away_by_bfloat16_weights():
    """AdamW at lr 1e-4 moves each weight by about 1e-4 a step, below half a bfloat16 step at 1.0
    (2^-8 = 0.0039): bfloat16-stored weights never move, float32 master weights move, and their
    bfloat16 copy (what bfloat16 compute reads) follows once the change passes that step."""
    cfg = base.get_config().optim
    cfg.update(learning_rate=1e-4, warmup_steps=0, grad_clip_norm=0.0)
    optimizer, _ = make_optimizer(cfg, total_steps=100)
    weights = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        params = {"w": jnp.ones((4,), dtype)}
        state = optimizer.init(params)
        for _ in range(50):
            updates, state = optimizer.update({"w": jnp.ones((4,), dtype)}, state, params)
            params = optax.apply_updates(params, updates)
        weights[dtype] = np.asarray(params["w"], np.float64)
    np.testing.assert_allclose(weights[jnp.float32], 1.0 - 50 * 1e-4, rtol=1e-5)
    np.testing.assert_array_equal(weights[jnp.bfloat16], 1.0)
    assert float(jnp.asarray(weights[jnp.float32][0], jnp.bfloat16)) < 1.0


def test_the_ema_stays_float32_over_bfloat16_weights():
    from t2ijax.training import state as train_state

    model, optimizer = _model("bfloat16", "bfloat16"), make_optimizer(base.get_config().optim, total_steps=10)[0]
    example = train_state.example_inputs(1, 16, 3, 4, 8)
    state = nn.unbox(jax.eval_shape(lambda r: train_state._init(r, model, optimizer, example, ema=True),
                                    jax.random.PRNGKey(0)))
    assert _float_dtypes(state.params) == {jnp.dtype("bfloat16")}
    assert _float_dtypes(state.ema_params) == {jnp.dtype("float32")}
