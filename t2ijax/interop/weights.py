"""A diffusers transformer's tensors <-> a Flax denoiser's params, through a table of entries.

An entry (torch_name, flax_path, layout, n) names a torch tensor, the Flax param it becomes and how
its axes map. A class's table lists its top-level entries and, per block stack, the entries of
block i (Flax paths relative to the block). Importing and exporting read the same table, so a round
trip is exact (transposes and reshapes only). A stack is one param subtree of stacked blocks
("blocks") when the model scans its layers, and "blocks_0", "blocks_1", ... when it does not.
"""
import dataclasses
from collections.abc import Callable, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2ijax.errors import ConfigError

# Layouts: torch Linear weights are [out, in], Flax kernels [in, out], fused attention
# kernels [embed, n, heads, head_dim] and output projections [heads, head_dim, embed].
COPY, KERNEL, FUSED, HEADS_IN = "copy", "kernel", "fused", "heads_in"
Entry = tuple[str, tuple[str, ...], str, int]


@dataclasses.dataclass(frozen=True)
class Stack:
    name: str  # the Flax name: "blocks" scanned, "blocks_{i}" unrolled
    count: int
    entries: Callable[[int], Iterable[Entry]]  # block i's entries


@dataclasses.dataclass(frozen=True)
class Table:
    top: Iterable[Entry]
    stacks: tuple[Stack, ...]
    hint: str = ""  # the config fields that decide which tensors exist, for the left-over message


def linear(torch_name: str, flax_path: tuple[str, ...], bias: bool = True, layout: str = KERNEL, n: int = 0):
    """The entries of a torch Linear: its weight as `layout` and its bias as it is."""
    yield f"{torch_name}.weight", flax_path + ("kernel",), layout, n
    if bias:
        yield f"{torch_name}.bias", flax_path + ("bias",), COPY, 0


def _to_flax(w: np.ndarray, layout: str, model: nn.Module, n: int) -> np.ndarray:
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


def _torch_shape(flax_shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    if layout == COPY:
        return flax_shape
    if layout == KERNEL:
        return flax_shape[::-1]
    if layout == FUSED:
        return (int(np.prod(flax_shape[1:])), flax_shape[0])
    return (flax_shape[-1], int(np.prod(flax_shape[:-1])))  # HEADS_IN


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: dict, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def take(tensors: dict, name: str, model: nn.Module, source: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Pops tensor `name` from `tensors`; a ConfigError if it is missing or, given `shape`, of another shape."""
    kind = type(model).__name__
    if name not in tensors:
        raise ConfigError(f"{source} has no tensor '{name}', which this {kind} config needs")
    tensor = np.asarray(tensors.pop(name))
    if shape is not None and tensor.shape != shape:
        raise ConfigError(f"{source}: tensor '{name}' has shape {tensor.shape}, this {kind} config needs {shape}")
    return tensor


def join(tensors: dict, fused: str, parts: tuple[str, ...], model: nn.Module, source: str,
         shape: tuple[int, ...] | None = None) -> None:
    """Replaces diffusers' separate projections `parts` in `tensors` (q, k, v weights, or biases; each of `shape`
    when given) by one tensor `fused` as the table reads it: weights stacked along their output axis, biases
    [len(parts), heads, head_dim] (left flat when their size is not that: the table then names the shape)."""
    joined = np.concatenate([take(tensors, part, model, source, shape) for part in parts])
    if fused.endswith("bias") and joined.size == len(parts) * model.num_heads * model.head_dim:
        joined = joined.reshape(len(parts), model.num_heads, model.head_dim)
    tensors[fused] = joined


def split(tensors: dict, fused: str, parts: tuple[str, ...]) -> None:
    """The inverse of `join`: tensor `fused` of `tensors` back into the separate projections `parts`."""
    joined = tensors.pop(fused)
    pieces = np.split(joined.reshape(-1) if fused.endswith("bias") else joined, len(parts))
    tensors.update({part: np.ascontiguousarray(piece) for part, piece in zip(parts, pieces)})


def expected_shapes(model: nn.Module) -> dict:
    """The (unboxed) param shapes of a denoiser, without allocating it."""
    p, c = model.patch_size, model.in_channels
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, p, p, c)), jnp.zeros((1,)),
                            jnp.zeros((1, 1, model.context_in_dim)), jnp.ones((1, 1), bool))
    return jax.tree.map(lambda s: s.shape, nn.unbox(shapes["params"]))


def _block(params: dict, stack: Stack, i: int, scanned: bool) -> dict:
    if scanned:
        return jax.tree.map(lambda x: x[i], params[stack.name])
    return params[f"{stack.name}_{i}"]


def _block_shapes(shapes: dict, stack: Stack, i: int, scanned: bool) -> dict:
    if scanned:
        return jax.tree.map(lambda s: s[1:], shapes[stack.name], is_leaf=lambda x: isinstance(x, tuple))
    return shapes[f"{stack.name}_{i}"]


def params_from_state_dict(state_dict: dict[str, np.ndarray], model: nn.Module, table: Table,
                           source: str = "the state dict") -> dict:
    """diffusers tensors (numpy, torch names) -> `model`'s param tree (blocks stacked when scanned).

    Raises ConfigError naming the tensor for a missing or left-over tensor or a shape mismatch.
    """
    expected, left = expected_shapes(model), dict(state_dict)

    def take_entry(entry: Entry, tree: dict, expected_tree: dict) -> None:
        name, path, layout, n = entry
        tensor = take(left, name, model, source, _torch_shape(_get(expected_tree, path), layout))
        _set(tree, path, _to_flax(tensor, layout, model, n))

    params: dict = {}
    for entry in table.top:
        take_entry(entry, params, expected)
    for stack in table.stacks:
        blocks = []
        for i in range(stack.count):
            blocks.append({})
            shapes = _block_shapes(expected, stack, i, model.scan_layers)
            for entry in stack.entries(i):
                take_entry(entry, blocks[-1], shapes)
        if model.scan_layers and blocks:
            params[stack.name] = jax.tree.map(lambda *xs: np.stack(xs), *blocks)
        else:
            params.update({f"{stack.name}_{i}": block for i, block in enumerate(blocks)})
    if left:
        raise ConfigError(f"{source} has tensors this {type(model).__name__} config does not use, e.g. '{sorted(left)[0]}' "
                          f"({len(left)} in all){'; check ' + table.hint if table.hint else ''}")
    return params


def state_dict_from_params(params: dict, model: nn.Module, table: Table) -> dict[str, np.ndarray]:
    """`model`'s params -> diffusers tensors (numpy float32, torch names), the inverse of the above."""
    params = jax.tree.map(lambda x: np.asarray(x, np.float32), nn.unbox(params))
    out = {name: _to_torch(_get(params, path), layout) for name, path, layout, _ in table.top}
    for stack in table.stacks:
        for i in range(stack.count):
            block = _block(params, stack, i, model.scan_layers)
            out.update({name: _to_torch(_get(block, path), layout) for name, path, layout, _ in stack.entries(i)})
    return {k: np.ascontiguousarray(v) for k, v in out.items()}
