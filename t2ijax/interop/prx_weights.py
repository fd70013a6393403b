"""The one table between diffusers' PRXTransformer2DModel tensor names and the Flax PRX params.

Each entry names a torch tensor, the Flax param it becomes and its layout; importing and
exporting read the same table, so a round trip is exact (transposes and reshapes only).
"""
from collections.abc import Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2ijax.errors import ConfigError
from t2ijax.models.prx import PRX

# Layouts: torch Linear weights are [out, in], Flax kernels [in, out], fused attention
# kernels [embed, n, heads, head_dim] and the output projection [heads, head_dim, embed].
COPY, KERNEL, FUSED, HEADS_IN = "copy", "kernel", "fused", "heads_in"


def _to_flax(w: np.ndarray, layout: str, model: PRX, n: int = 0) -> np.ndarray:
    if layout == COPY:
        return w
    if layout == KERNEL:
        return w.T
    if layout == FUSED:
        return w.T.reshape(w.shape[1], n, model.num_heads, model.head_dim)
    return w.T.reshape(model.num_heads, model.head_dim, -1)  # HEADS_IN


def _to_torch(k: np.ndarray, layout: str) -> np.ndarray:
    if layout == COPY:
        return k
    if layout == KERNEL:
        return k.T
    if layout == FUSED:
        return k.reshape(k.shape[0], -1).T
    return k.reshape(-1, k.shape[-1]).T  # HEADS_IN


def _linear(torch_name: str, flax_path: tuple[str, ...], bias: bool = True):
    yield f"{torch_name}.weight", flax_path + ("kernel",), KERNEL, 0
    if bias:
        yield f"{torch_name}.bias", flax_path + ("bias",), COPY, 0


def _block(i: int) -> Iterator[tuple]:
    """Entries of block i, with Flax paths relative to the block."""
    t = f"blocks.{i}."
    yield from _linear(t + "modulation.lin", ("modulation",))
    yield t + "attention.img_qkv_proj.weight", ("attention", "img_qkv", "kernel"), FUSED, 3
    yield t + "attention.txt_kv_proj.weight", ("attention", "txt_kv", "kernel"), FUSED, 2
    for norm in ("norm_q", "norm_k", "norm_added_k"):
        yield t + f"attention.{norm}.weight", ("attention", norm, "scale"), COPY, 0
    yield t + "attention.to_out.0.weight", ("attention", "to_out", "kernel"), HEADS_IN, 0
    for proj in ("gate_proj", "up_proj", "down_proj"):
        yield from _linear(t + proj, (proj,), bias=False)


def _top(model: PRX) -> Iterator[tuple]:
    yield from _linear("txt_in", ("txt_in",))
    yield from _linear("time_in.in_layer", ("time_in", "in_layer"))
    yield from _linear("time_in.out_layer", ("time_in", "out_layer"))
    yield from _linear("final_layer.adaLN_modulation.1", ("final_layer", "adaLN_modulation"))
    yield from _linear("final_layer.linear", ("final_layer", "linear"))
    if model.bottleneck_size is not None:
        yield from _linear("img_in.0", ("img_in_bottleneck",))
        yield from _linear("img_in.1", ("img_in",))
    else:
        yield from _linear("img_in", ("img_in",))
    if model.resolution_embeds:
        yield from _linear("resolution_embedder.mlp.in_layer", ("resolution_embedder", "in_layer"))
        yield from _linear("resolution_embedder.mlp.out_layer", ("resolution_embedder", "out_layer"))


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: dict, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def expected_shapes(model: PRX) -> dict:
    """The (unboxed) param shapes of `model`, without allocating it."""
    p, c = model.patch_size, model.in_channels
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, p, p, c)), jnp.zeros((1,)),
                            jnp.zeros((1, 1, model.context_in_dim)), jnp.ones((1, 1), bool))
    return jax.tree.map(lambda s: s.shape, nn.unbox(shapes["params"]))


def _torch_shape(flax_shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    if layout == COPY:
        return flax_shape
    if layout == KERNEL:
        return flax_shape[::-1]
    if layout == FUSED:
        return (int(np.prod(flax_shape[1:])), flax_shape[0])
    return (flax_shape[-1], int(np.prod(flax_shape[:-1])))  # HEADS_IN


def params_from_state_dict(state_dict: dict[str, np.ndarray], model: PRX, source: str = "the state dict") -> dict:
    """diffusers tensors (numpy, torch names) -> `model`'s param tree (layers stacked when scanned).

    Raises ConfigError naming the tensor for a missing or left-over tensor or a shape mismatch.
    """
    expected, left = expected_shapes(model), dict(state_dict)

    def take(name: str, path: tuple[str, ...], layout: str, n: int, tree: dict, expected_tree: dict) -> None:
        if name not in left:
            raise ConfigError(f"{source} has no tensor '{name}', which this PRX config needs")
        tensor, shape = np.asarray(left.pop(name)), _torch_shape(_get(expected_tree, path), layout)
        if tensor.shape != shape:
            raise ConfigError(f"{source}: tensor '{name}' has shape {tensor.shape}, this PRX config needs {shape}")
        _set(tree, path, _to_flax(tensor, layout, model, n))

    params: dict = {}
    for entry in _top(model):
        take(*entry, params, expected)
    blocks = []
    for i in range(model.depth):
        block_shapes = (jax.tree.map(lambda s: s[1:], expected["blocks"], is_leaf=lambda x: isinstance(x, tuple))
                        if model.scan_layers else expected[f"blocks_{i}"])
        blocks.append({})
        for entry in _block(i):
            take(*entry, blocks[-1], block_shapes)
    if model.scan_layers:
        params["blocks"] = jax.tree.map(lambda *xs: np.stack(xs), *blocks)
    else:
        params.update({f"blocks_{i}": block for i, block in enumerate(blocks)})
    if left:
        raise ConfigError(f"{source} has tensors this PRX config does not use, e.g. '{sorted(left)[0]}' "
                          f"({len(left)} in all); check depth, bottleneck_size and resolution_embeds")
    return params


def state_dict_from_params(params: dict, model: PRX) -> dict[str, np.ndarray]:
    """`model`'s params -> diffusers tensors (numpy float32, torch names), the inverse of the above."""
    params = jax.tree.map(lambda x: np.asarray(x, np.float32), nn.unbox(params))
    out = {name: _to_torch(_get(params, path), layout) for name, path, layout, _ in _top(model)}
    for i in range(model.depth):
        block = (jax.tree.map(lambda x: x[i], params["blocks"]) if model.scan_layers else params[f"blocks_{i}"])
        out.update({name: _to_torch(_get(block, path), layout) for name, path, layout, _ in _block(i)})
    return {k: np.ascontiguousarray(v) for k, v in out.items()}
