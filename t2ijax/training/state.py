"""The training state and its sharded initialisation."""
import functools
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from t2ijax import sharding


@flax.struct.dataclass
class TrainState:
    step: jax.Array          # int32 scalar: number of updates applied
    params: Any
    opt_state: Any
    rng: jax.Array           # uint32[2] raw key: checkpointable as a plain array
    ema_params: Any = None   # moving average of params (None when config.ema is off)

    @property
    def sampling_params(self):
        """The parameters samples and evaluations use: the EMA when there is one."""
        return self.params if self.ema_params is None else self.ema_params


def _init(rng: jax.Array, model: nn.Module, optimizer: optax.GradientTransformation,
          example: dict[str, jax.ShapeDtypeStruct], ema: bool) -> TrainState:
    params_rng, state_rng = jax.random.split(rng)
    inputs = [jnp.zeros(example[k].shape, example[k].dtype) for k in ("x", "t", "text", "text_mask")]
    params = model.init(params_rng, *inputs)["params"]
    # The EMA stays float32 whatever the params' dtype: in bfloat16, 0.001 x (params - ema) rounds away.
    ema_params = jax.tree.map(lambda p: p.astype(jnp.float32), params) if ema else None
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                      rng=state_rng, ema_params=ema_params)


def example_inputs(batch: int, resolution: int, channels: int, text_length: int, text_dim: int):
    return {
        "x": jax.ShapeDtypeStruct((batch, resolution, resolution, channels), jnp.float32),
        "t": jax.ShapeDtypeStruct((batch,), jnp.float32),
        "text": jax.ShapeDtypeStruct((batch, text_length, text_dim), jnp.float32),
        "text_mask": jax.ShapeDtypeStruct((batch, text_length), jnp.bool_),
    }


def _shardings(init, mesh: Mesh, rules):
    with nn.logical_axis_rules(rules):
        return sharding.state_shardings(jax.eval_shape(init, jax.random.PRNGKey(0)), mesh, rules)


def create(seed: int, model: nn.Module, optimizer: optax.GradientTransformation, example, mesh: Mesh,
           rules, ema: bool = False) -> tuple[TrainState, Any]:
    """Initialises the state directly into its shardings. Returns (state, state_shardings)."""
    init = functools.partial(_init, model=model, optimizer=optimizer, example=example, ema=ema)
    shardings = _shardings(init, mesh, rules)
    with nn.logical_axis_rules(rules):
        state = jax.jit(lambda r: nn.meta.unbox(init(r)), out_shardings=shardings)(jax.random.PRNGKey(seed))
    return state, shardings


def abstract(model: nn.Module, optimizer: optax.GradientTransformation, example, mesh: Mesh, rules,
             ema: bool = False) -> TrainState:
    """Shapes, dtypes and shardings of the state without computing it: the target of a restore."""
    init = functools.partial(_init, model=model, optimizer=optimizer, example=example, ema=ema)
    shapes = nn.meta.unbox(jax.eval_shape(init, jax.random.PRNGKey(0)))
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes,
                        _shardings(init, mesh, rules))
