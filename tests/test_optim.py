"""Muon: which params it takes, that each layer's matrix update is orthogonalized, that the rest get
AdamW, that clipping and schedules still apply, and that it trains the tiny config."""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.contrib import scale_by_muon

from configs import base
from conftest import tiny_config
from t2ijax.models.layers import Dense
from t2ijax.models.prx import PRX
from t2ijax.training.checkpoint import Checkpointer
from t2ijax.training.loop import Run
from t2ijax.training.optim import make_optimizer, muon_matrix

# Five Newton-Schulz steps with the standard quintic coefficients leave singular values in about
# [0.68, 1.15] for condition numbers up to 100, not at 1 (Jordan's "US'V^T").
NS_BAND = (0.6, 1.2)


def _model(scan_layers=True):
    return PRX(in_channels=3, patch_size=4, context_in_dim=8, hidden_size=32, depth=2, num_heads=2,
               scan_layers=scan_layers)


def _inputs():
    return jnp.zeros((1, 16, 16, 3)), jnp.zeros((1,)), jnp.zeros((1, 4, 8)), jnp.ones((1, 4), bool)


@functools.cache
def _boxed_params(scan_layers=True):
    """Zeros in the params' boxed tree: the optimizers here read only their shapes (no weight decay)."""
    shapes = jax.eval_shape(_model(scan_layers).init, jax.random.PRNGKey(0), *_inputs())["params"]
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _params(scan_layers=True, boxed=False):
    return _boxed_params(scan_layers) if boxed else nn.unbox(_boxed_params(scan_layers))


def _make(cfg):
    """The optimizer of `cfg` with its update jitted."""
    optimizer, schedule = make_optimizer(cfg, total_steps=12)
    return optimizer._replace(update=jax.jit(optimizer.update)), schedule


def _optim(**overrides):
    cfg = base.get_config().optim
    cfg.update(name="muon", warmup_steps=0, grad_clip_norm=0.0, learning_rate=1e-3, muon_learning_rate=2e-2)
    cfg.update(overrides)
    return cfg


def _init_recording_fan_in(model, inputs) -> tuple[dict, dict[tuple[str, ...], int]]:
    """(the model's abstract variables, each Dense's module path -> how many leading kernel axes it contracts)."""
    n_in = {}

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, Dense) and context.method_name == "__call__":
            n_in[context.module.path] = context.module.n_in
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), *inputs)
    return variables, n_in


@functools.cache
def _dense_fan_in() -> dict[tuple[str, ...], int]:
    return _init_recording_fan_in(_model(), _inputs())[1]


def _layer_matrices(path, x):
    """[layers, fan_in, fan_out]: a stacked block kernel as the matrices its Dense multiplies by."""
    n_in = _dense_fan_in()[tuple(k.key for k in path[:-1])]
    return np.asarray(x).reshape(x.shape[0], math.prod(x.shape[1:1 + n_in]), -1)


def _conditioned_gradient(rng, path, shape):
    """Per layer, a (fan-in x fan-out) matrix of condition number 30 at a scale of its own, reshaped to `shape`."""
    layers, fan_in, fan_out = _layer_matrices(path, np.zeros(shape)).shape
    out = []
    for scale in np.geomspace(1e-3, 10.0, layers):
        u, _ = np.linalg.qr(rng.normal(size=(fan_in, min(fan_in, fan_out))))
        v, _ = np.linalg.qr(rng.normal(size=(fan_out, min(fan_in, fan_out))))
        out.append(scale * (u * np.geomspace(1.0, 1 / 30, u.shape[1])) @ v.T)
    return jnp.asarray(np.stack(out).reshape(shape), jnp.float32)


def _matrix_leaves(tree):
    return [(path, x) for path, x in jax.tree_util.tree_leaves_with_path(tree) if muon_matrix(path, x) is not None]


def test_muon_takes_the_block_kernels_and_adam_the_rest():
    for scan_layers in (True, False):
        paths = {jax.tree_util.keystr(p): muon_matrix(p, x) is not None
                 for p, x in jax.tree_util.tree_leaves_with_path(_params(scan_layers))}
        muon = {p for p, m in paths.items() if m}
        assert muon and all("blocks" in p and p.endswith("['kernel']") for p in muon)
        adam = {p for p, m in paths.items() if not m}
        for part in ("img_in", "txt_in", "final_layer", "time_in", "['bias']", "norm_q", "norm_added_k"):
            assert any(part in p for p in adam), part
        assert len(muon) == 7 * (1 if scan_layers else 2)


def test_each_layer_kernel_is_seen_as_the_matrix_its_dense_multiplies_by():
    """muon_matrix's fan-in axes are each block Dense's n_in (a new multi-axis Dense fails here)."""
    n_in = _dense_fan_in()
    for path, x in _matrix_leaves(_params()):
        module, dims = tuple(k.key for k in path[:-1]), muon_matrix(path, x)
        assert dims.reduction_axis == tuple(range(1, 1 + n_in[module])), module
        assert dims.output_axis == tuple(range(1 + n_in[module], x.ndim)), module
    assert n_in[("blocks", "attention", "to_out")] == 2


def test_muon_orthogonalizes_each_layer_matrix_of_stacked_multi_axis_kernels():
    cfg = _optim()
    params = _params()
    rng = np.random.default_rng(0)
    grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), params)
    for path, x in _matrix_leaves(params):
        grads = _set(grads, path, _conditioned_gradient(rng, path, x.shape))
    optimizer, _ = _make(cfg)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)

    reference = scale_by_muon(ns_steps=cfg.muon_ns_steps, beta=cfg.muon_momentum)
    for path, _ in _matrix_leaves(params):
        name = jax.tree_util.keystr(path)
        update = _layer_matrices(path, _get(updates, path))
        orthogonal = update / -(cfg.muon_learning_rate * cfg.muon_update_rms * math.sqrt(max(update.shape[1:])))
        for layer, (matrix, gradient) in enumerate(zip(orthogonal, _layer_matrices(path, _get(grads, path)))):
            singular = np.linalg.svd(matrix, compute_uv=False)
            assert NS_BAND[0] < singular.min() and singular.max() < NS_BAND[1], (name, layer, singular)
            alone, _ = reference.update(jnp.asarray(gradient), reference.init(jnp.asarray(gradient)))
            np.testing.assert_allclose(matrix, alone, atol=1e-5, err_msg=f"{name} layer {layer}")


def test_the_other_params_get_adamw_updates():
    cfg = _optim()
    params = _params()
    rng = np.random.default_rng(1)
    grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), params)
    optimizer, _ = _make(cfg)
    adamw = optax.adamw(cfg.learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
    state, adam_state = optimizer.init(params), adamw.init(params)
    for _ in range(3):
        updates, state = optimizer.update(grads, state, params)
        expected, adam_state = adamw.update(grads, adam_state, params)
        grads = jax.tree.map(lambda g: 0.5 * g + 0.1, grads)
    for path, update in jax.tree_util.tree_leaves_with_path(updates):
        if muon_matrix(path, update) is None:
            np.testing.assert_allclose(update, _get(expected, path), rtol=1e-5, atol=1e-9, err_msg=jax.tree_util.keystr(path))
        else:
            assert not np.allclose(update, _get(expected, path))


def test_muon_state_initialises_on_boxed_params_into_the_same_tree():
    optimizer, _ = _make(_optim())
    boxed = nn.unbox(optimizer.init(_params(boxed=True)))
    assert jax.tree.structure(boxed) == jax.tree.structure(optimizer.init(_params()))


def _muon_norm(updates, params):
    return math.sqrt(sum(float(jnp.sum(jnp.square(_get(updates, p)))) for p, _ in _matrix_leaves(params)))


def _adam_norm(updates):
    return math.sqrt(sum(float(jnp.sum(jnp.square(u))) for p, u in jax.tree_util.tree_leaves_with_path(updates)
                         if muon_matrix(p, u) is None))


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_both_groups_follow_the_schedule_from_their_own_peaks(schedule):
    """A constant gradient keeps Muon's and Adam's first-step directions, so each update's size is its lr."""
    cfg = _optim(schedule=schedule, warmup_steps=4, final_lr_fraction=0.1)
    params = _params()
    rng = np.random.default_rng(3)
    grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), params)
    optimizer, lr = _make(cfg)
    state = optimizer.init(params)
    muon, adam = [], []
    for _ in range(12):
        updates, state = optimizer.update(grads, state, params)
        muon.append(_muon_norm(updates, params))
        adam.append(_adam_norm(updates))
    assert muon[0] == adam[0] == 0.0  # the warmup starts at 0
    ratio = cfg.muon_learning_rate / cfg.learning_rate
    for step in range(1, 12):
        np.testing.assert_allclose(muon[step] / muon[6], float(lr(step) / lr(6)), rtol=1e-4)
        np.testing.assert_allclose(adam[step] / adam[6], float(lr(step) / lr(6)), rtol=1e-4)
    # Muon's size is its own peak lr x update RMS over its scalars, whatever the gradient's size.
    n = sum(x.size for _, x in _matrix_leaves(params))
    assert 0.5 < muon[6] / (float(lr(6)) * ratio * cfg.muon_update_rms * math.sqrt(n)) < 1.5


def test_clipping_comes_before_muon():
    """A gradient spike after a small gradient: clipped first, it moves the momentum less."""
    params = _params()
    rng = np.random.default_rng(2)
    small, spike = (jax.tree.map(lambda x: jnp.asarray(scale * rng.normal(size=x.shape), x.dtype), params)
                    for scale in (1e-3, 100.0))
    clipped, _ = optax.clip_by_global_norm(0.5).update(spike, optax.EmptyState())
    with_clip, _ = _make(_optim(grad_clip_norm=0.5))
    without, _ = _make(_optim())

    def second_update(optimizer, grads):
        _, state = optimizer.update(small, optimizer.init(params), params)
        return optimizer.update(grads, state, params)[0]

    a, b, c = second_update(with_clip, spike), second_update(without, clipped), second_update(without, spike)
    for x, y, z in zip(jax.tree.leaves(a), jax.tree.leaves(b), jax.tree.leaves(c)):
        np.testing.assert_allclose(x, y, atol=1e-6)
        assert np.abs(x - z).max() > 1e-4


def test_muon_trains_the_tiny_config_and_its_state_checkpoints(data_dir, tmp_path):
    config = tiny_config(data_dir)
    config.optim.update(name="muon", schedule="constant", warmup_steps=1, learning_rate=3e-3,
                        muon_learning_rate=3e-3)
    run = Run(config, str(tmp_path / "run")).setup()
    batch = run.device_batch(0)
    state, losses = run.state, []
    for _ in range(40):
        state, metrics = run.train_step(state, batch)
        losses.append(float(metrics["loss"]))
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert np.isfinite(losses).all() and last < 0.6 * first, (first, last)

    checkpointer = Checkpointer(str(tmp_path / "ckpt"), keep=1, async_save=False)
    checkpointer.save(state, run.counters)
    checkpointer.close()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    restored = Checkpointer(str(tmp_path / "ckpt"), keep=1).restore(abstract)
    assert jax.tree.structure(restored.opt_state) == jax.tree.structure(state.opt_state)
    for x, y in zip(jax.tree.leaves(restored.opt_state), jax.tree.leaves(state.opt_state)):
        np.testing.assert_array_equal(x, y)
    run.checkpointer.close()


def _get(tree, path):
    for key in path:
        tree = tree[key.key]
    return tree


def _set(tree, path, value):
    if not path:
        return value
    return {**tree, path[0].key: _set(tree[path[0].key], path[1:], value)}


@pytest.mark.parametrize("backbone", ["dit_cross", "mmdit", "flux", "uvit"])
@pytest.mark.parametrize("scan_layers", [True, False])
def test_every_backbones_block_kernels_are_the_matrices_their_dense_multiplies_by(backbone, scan_layers):
    """muon_matrix on the other backbones' block stacks (double/single, in/out/mid, final): every block Dense
    kernel is taken, with its own n_in as fan-in and the layer axis first when stacked; nothing else is."""
    from configs import shapes_tiny
    from t2ijax.models.build import build_model

    config = shapes_tiny.get_config()
    config.model.update(name=backbone, hidden_size=32, num_heads=2, depth=3, scan_layers=scan_layers)
    model = build_model(config, 3, 8)
    inputs = (jnp.zeros((1, 8, 8, 3)), jnp.zeros((1,)), jnp.zeros((1, 4, 8)), jnp.ones((1, 4), bool))
    variables, n_in = _init_recording_fan_in(model, inputs)
    params = nn.unbox(variables["params"])
    stacks = {"blocks", "double_blocks", "single_blocks", "in_blocks", "out_blocks", "final_block", "mid_block"}
    in_blocks = lambda path: str(path[0].key).rstrip("_0123456789") in stacks
    for path, x in jax.tree_util.tree_leaves_with_path(params):
        dims, keys = muon_matrix(path, x), tuple(k.key for k in path)
        if not (in_blocks(path) and keys[-1] == "kernel" and keys[:-1] in n_in):
            assert dims is None, keys
            continue
        stacked = scan_layers and keys[0] != "mid_block"
        first = 1 if stacked else 0
        assert dims is not None, keys
        assert dims.reduction_axis == tuple(range(first, first + n_in[keys[:-1]])), keys
        assert dims.output_axis == tuple(range(first + n_in[keys[:-1]], x.ndim)), keys
