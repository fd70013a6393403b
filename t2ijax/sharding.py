"""The device mesh, logical-axis rules, and the shardings of state and batches."""
import itertools
import math

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from t2ijax.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def mesh_shape(mesh_cfg: ml_collections.ConfigDict, num_devices: int) -> tuple[int, ...]:
    """Axis sizes for `num_devices`, the one -1 axis taking what the others leave."""
    sizes = [int(mesh_cfg[a]) for a in MESH_AXES]
    spec = ", ".join(f"{a}={s}" for a, s in zip(MESH_AXES, sizes))
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ConfigError(f"config.mesh ({spec}) must hold positive sizes and at most one -1")
    fixed = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % fixed:
            raise ConfigError(f"config.mesh ({spec}) cannot fill {num_devices} devices: "
                             f"{num_devices} is not divisible by {fixed}; change config.mesh")
        sizes[sizes.index(-1)] = num_devices // fixed
    elif fixed != num_devices:
        raise ConfigError(f"config.mesh ({spec}) uses {fixed} devices but {num_devices} are present; "
                         "set the sizes to multiply to the device count or make one axis -1")
    return tuple(sizes)


def make_mesh(mesh_cfg: ml_collections.ConfigDict, devices=None) -> Mesh:
    """A (data, fsdp, tensor) mesh over `devices` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else devices
    shape = mesh_shape(mesh_cfg, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def logical_rules(rules_cfg: ml_collections.ConfigDict):
    """Flax's (logical name, mesh axes or None) pairs from config.sharding_rules."""
    return tuple((name, tuple(axes) or None) for name, axes in rules_cfg.items())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over data x fsdp, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def batch_ways(mesh: Mesh | None) -> int:
    """How many ways a batch is split over `mesh` (data x fsdp); 1 without a mesh."""
    return 1 if mesh is None else math.prod(mesh.shape[a] for a in BATCH_AXES)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def state_shardings(abstract_boxed, mesh: Mesh, rules) -> object:
    """NamedShardings for a pytree whose parameters carry logical axis names.

    Raises a one-line error for any dimension the mesh cannot split evenly, before compiling.
    """
    # A masked optimizer (optax.partition) keeps an empty optax.MaskedNode, still in its param's box, for
    # each param it leaves to another: no array, so no sharding.
    is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)
    abstract_boxed = jax.tree.map(lambda x: x.unbox() if is_box(x) and not jax.tree.leaves(x.unbox()) else x,
                                  abstract_boxed, is_leaf=is_box)
    logical_specs = nn.get_partition_spec(abstract_boxed)
    shardings = nn.logical_to_mesh_sharding(logical_specs, mesh, rules)
    unboxed = nn.meta.unbox(abstract_boxed)
    for (path, leaf), sharding in zip(jax.tree_util.tree_leaves_with_path(unboxed),
                                      jax.tree_util.tree_leaves(shardings)):
        for dim, axes in zip(leaf.shape, sharding.spec):
            axes = (axes,) if isinstance(axes, str) else (axes or ())
            ways = math.prod(mesh.shape[a] for a in axes)
            if dim % ways:
                raise ConfigError(
                    f"parameter {jax.tree_util.keystr(path)} of shape {leaf.shape} cannot be split "
                    f"{ways} ways over mesh axes {axes}; change config.mesh or config.sharding_rules")
    return shardings


def initialize_distributed(cfg: ml_collections.ConfigDict) -> None:
    """Joins the job's other processes (config.distributed); call before anything touches a device.

    Without a coordinator address jax looks for a Cloud TPU VM, SLURM or Open MPI job and takes the
    address, process count and id from it; on a machine that is none of these the run is one process.
    """
    address, count, index = cfg.coordinator_address, cfg.num_processes, cfg.process_id
    if not address:
        if count or index != -1:
            raise ConfigError("config.distributed.num_processes/process_id are set without "
                              "config.distributed.coordinator_address; give the address (host:port) too, or "
                              "leave all three empty to detect the cluster")
        try:
            jax.distributed.initialize()
        except ValueError:  # no cluster detected: one process
            return
    else:
        if ":" not in address or count < 0 or index < -1 or (count and index >= count):
            raise ConfigError(f"config.distributed needs coordinator_address as host:port (got {address!r}), "
                              f"num_processes >= 1 and 0 <= process_id < num_processes (got {count}, {index}); "
                              "0 and -1 take them from the cluster")
        jax.distributed.initialize(address, count or None, None if index == -1 else index)
    logging.info("process %d of %d, %d local devices of %d", jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.device_count())


_BARRIERS = itertools.count()  # every process meets the same barriers in the same order


def barrier(name: str, timeout_s: int | None = None) -> None:
    """Waits until every process gets here, through the coordination service (no device collective);
    orbax's default timeout (300 s) unless `timeout_s`. A barrier id is used once, so `name` may repeat."""
    ocp.multihost.sync_global_processes(f"{name} #{next(_BARRIERS)}", timeout=timeout_s,
                                        processes=set(range(jax.process_count())))


def global_batch(local: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assembles each host's slice of the batch into global arrays sharded over the mesh."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
