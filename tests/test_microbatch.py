"""optim.microbatches: one step on k microbatches is the step on the whole batch to float rounding, with
the terms whose draws or statistics span the batch in play: caption dropout, t and noise, the contrastive
pairs, REPA, and P-DINO's mean over the examples below its t threshold."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from conftest import tiny_config
from test_perceptual import linear_teacher
from t2ijax.models.autoencoders import Identity
from t2ijax.models.build import build_model
from t2ijax.techniques.frozen import Frozen
from t2ijax.training.state import TrainState
from t2ijax.training.step import make_train_step, zero_caption

BATCH, TEXT_LENGTH, TEXT_DIM = 8, 5, 8
LEARNING_RATE = 1e3  # the update dwarfs the params: (new - old) / rate is the gradient to float rounding


def _config(microbatches: int):
    c = tiny_config("unused")
    c.model.depth = 1
    c.data.caption_dropout = 0.5
    c.contrastive.weight = 0.1
    c.repa.update(weight=0.5, layer=0)
    c.perceptual.update(dino_weight=0.1, dino_t_max=0.6)
    c.optim.microbatches = microbatches
    return c


def _batch():
    rng = np.random.default_rng(0)
    mask = np.arange(TEXT_LENGTH)[None, :] < rng.integers(1, TEXT_LENGTH + 1, (BATCH, 1))
    return {"x0": jnp.asarray(rng.normal(size=(BATCH, 32, 32, 3)), jnp.float32),
            "image": jnp.asarray(rng.integers(0, 256, (BATCH, 32, 32, 3)), jnp.uint8),
            "text": jnp.asarray(rng.normal(size=(BATCH, TEXT_LENGTH, TEXT_DIM)), jnp.float32),
            "text_mask": jnp.asarray(mask)}


def _one_step(microbatches: int):
    """(new params - params) / learning rate, i.e. minus the gradient (plain SGD), and the metrics."""
    config, teacher = _config(microbatches), linear_teacher()
    model = build_model(config, 3, TEXT_DIM, teacher.dim)
    batch = _batch()
    shapes = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), batch["x0"][:1], jnp.ones((1,)),
                                     batch["text"][:1], batch["text_mask"][:1])["params"])
    noise = np.random.default_rng(1)  # random values everywhere: a fresh PRX predicts 0 (adaLN-Zero)
    params = jax.tree.map(lambda p: 0.3 * noise.normal(size=p.shape).astype(np.float32), shapes)
    optimizer = optax.sgd(LEARNING_RATE)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                       rng=jax.random.PRNGKey(3))
    step = make_train_step(model, optimizer, optax.constant_schedule(LEARNING_RATE), config,
                           *zero_caption(TEXT_LENGTH, TEXT_DIM), shift=1.0, frozen=Frozen(teacher, Identity()))
    new, metrics = jax.jit(step)(state, batch, {"teacher": jnp.float32(1.0), "decoder": {}})
    update = jax.tree.map(lambda a, b: (np.asarray(a) - b) / LEARNING_RATE, new.params, params)
    return update, {k: float(v) for k, v in metrics.items()}


def test_a_step_on_microbatches_is_the_step_on_the_whole_batch():
    whole, whole_metrics = _one_step(1)
    split, split_metrics = _one_step(4)
    assert {"loss_contrastive", "loss_repa", "loss_pdino"} <= set(whole_metrics)
    assert whole_metrics["loss_pdino"] > 0  # some examples are below dino_t_max
    for name, value in whole_metrics.items():
        np.testing.assert_allclose(split_metrics[name], value, rtol=1e-5, atol=1e-7, err_msg=name)
    for (path, expected), got in zip(jax.tree_util.tree_leaves_with_path(whole), jax.tree.leaves(split)):
        scale = np.abs(expected).max()
        assert scale > 0, jax.tree_util.keystr(path)  # every parameter gets a gradient
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * scale, err_msg=jax.tree_util.keystr(path))
