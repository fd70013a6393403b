"""Measured time of a compiled step's collectives (t2ijax/benchmarks/collectives.py): each distinct one
(kind, dtype, bytes per device, device groups) run alone, in a loop of `trips` inside one jitted program
on the same mesh, over the mesh axes whose groups are its replica groups; times its count per step."""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from t2ijax.benchmarks.collectives import Collective
from t2ijax.benchmarks.timing import seconds_per_call


def axis_groups(mesh: jax.sharding.Mesh, axes: tuple[str, ...]) -> list[list[int]]:
    """The device-id groups (positions in the mesh's flattened devices, XLA's numbering) that vary along `axes`."""
    ids = np.arange(mesh.size).reshape(mesh.devices.shape)
    along = [mesh.axis_names.index(a) for a in axes]
    rest = [i for i in range(ids.ndim) if i not in along]
    return ids.transpose(rest + along).reshape(-1, math.prod(mesh.shape[a] for a in axes)).tolist()


def replay_axes(mesh: jax.sharding.Mesh, c: Collective) -> tuple[tuple[str, ...], bool]:
    """The mesh axes `c` runs over, and whether their groups are exactly its replica groups (else: the first
    axes with its group size, e.g. for groups along part of an axis)."""
    sets = lambda groups: {frozenset(g) for g in groups}
    candidates = [axes for n in range(1, len(mesh.axis_names) + 1)
                  for axes in itertools.combinations(mesh.axis_names, n) if math.prod(mesh.shape[a] for a in axes) > 1]
    for axes in candidates:
        groups = axis_groups(mesh, axes)
        if c.kind == "collective-permute":  # replica groups are (source, target) pairs
            if all(any(set(pair) <= set(g) for g in groups) for pair in c.replica_groups):
                return axes, True
        elif sets(groups) == sets(c.replica_groups):
            return axes, True
    size = 2 if c.kind == "collective-permute" else c.group_size
    same_size = [axes for axes in candidates if math.prod(mesh.shape[a] for a in axes) == size]
    return (same_size or candidates)[0], False


def _dtype(hlo: str) -> jnp.dtype:
    """HLO's element type name as a numpy dtype of its width (a pred buffer is timed as uint8: psum takes no bools)."""
    named = {"pred": "uint8", "bf16": "bfloat16", "f8e4m3fn": "float8_e4m3fn", "f8e5m2": "float8_e5m2"}
    return jnp.dtype(named.get(hlo) or {"s": "int", "u": "uint", "f": "float", "c": "complex"}[hlo[0]] + hlo[1:])


def _loop(kind: str, axes: tuple[str, ...], n: int, trips: int):
    """The per-device program: `trips` of the collective, each feeding the next (nothing to hoist)."""

    def one(i, x):
        if kind == "all-gather":
            return lax.dynamic_slice_in_dim(lax.all_gather(x, axes, tiled=True), (i % n) * x.shape[0], x.shape[0])
        if kind == "reduce-scatter":
            shard = lax.psum_scatter(x, axes, tiled=True)
            return lax.dynamic_update_slice_in_dim(x, shard, (i % n) * shard.shape[0], 0)
        if kind == "all-reduce":
            return lax.psum(x, axes)
        if kind == "all-to-all":
            return lax.all_to_all(x, axes, 0, 0, tiled=True)
        return lax.ppermute(x, axes, [(j, (j + 1) % n) for j in range(n)])

    return lambda x: lax.fori_loop(0, trips, one, x)


def program(mesh: jax.sharding.Mesh, c: Collective, axes: tuple[str, ...], trips: int):
    """The jitted loop of `trips` x `c` over `axes`, and its input: each device's buffer is `c`'s."""
    n = math.prod(mesh.shape[a] for a in axes)
    dtype = _dtype(c.dtype)
    elements = -(-max(1, c.bytes // dtype.itemsize) // n) * n  # whole shards
    local = elements // n if c.kind == "all-gather" else elements  # an all-gather's buffer is its result
    everywhere = P(mesh.axis_names)
    loop = jax.jit(jax.shard_map(_loop(c.kind, axes, n, trips), mesh=mesh, in_specs=everywhere,
                                 out_specs=everywhere, check_vma=False))
    x = jax.jit(lambda: jnp.zeros((local * mesh.size,), dtype), out_shardings=NamedSharding(mesh, everywhere))()
    return loop, x


def seconds(mesh: jax.sharding.Mesh, c: Collective, axes: tuple[str, ...], trips: int = 20,
            repeats: int = 3) -> float:
    """Wall seconds of one `c` over `axes` of `mesh`, the mean of `trips` x `repeats` back to back."""
    loop, x = program(mesh, c, axes, trips)
    return seconds_per_call(lambda _: loop(x), repeats) / trips


def measure(mesh: jax.sharding.Mesh, collectives: list[Collective]) -> dict:
    """Seconds per step of `collectives`, each distinct one timed once: in total, per kind, and how many
    ran over axes whose groups only matched in size."""
    timed, per_kind, approximate = {}, {}, 0
    for c in collectives:
        if c.group_size == 1 and c.kind != "collective-permute":
            continue  # nothing crosses devices
        key = (c.kind, c.dtype, c.bytes, tuple(map(tuple, c.replica_groups)))
        if key not in timed:
            axes, exact = replay_axes(mesh, c)
            timed[key] = seconds(mesh, c, axes)
            approximate += not exact
        per_kind[c.kind] = per_kind.get(c.kind, 0.0) + c.count * timed[key]
    return {"measured_s_per_step": sum(per_kind.values()), "measured_s_per_kind": per_kind,
            "distinct_replayed": len(timed), "replayed_on_size_only": approximate}
