"""The device mesh, logical-axis rules, and the shardings of state and batches."""
import collections
import itertools
import math

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from t2ijax import liveness
from t2ijax.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def mesh_shape(mesh_cfg: ml_collections.ConfigDict, count: int, field: str = "config.mesh",
               unit: str = "devices") -> tuple[int, ...]:
    """Axis sizes for `count` devices (or slices, `unit`), the one -1 axis taking what the others leave."""
    sizes = [int(mesh_cfg[a]) for a in MESH_AXES]
    spec = ", ".join(f"{a}={s}" for a, s in zip(MESH_AXES, sizes))
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ConfigError(f"{field} ({spec}) must hold positive sizes and at most one -1")
    fixed = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if count % fixed:
            raise ConfigError(f"{field} ({spec}) cannot fill {count} {unit}: "
                             f"{count} is not divisible by {fixed}; change {field}")
        sizes[sizes.index(-1)] = count // fixed
    elif fixed != count:
        raise ConfigError(f"{field} ({spec}) uses {fixed} {unit} but {count} are present; "
                         f"set the sizes to multiply to {count} or make one axis -1")
    return tuple(sizes)


def devices_per_slice(num_devices: int, num_slices: int) -> int:
    if num_slices < 1 or num_devices % num_slices:
        raise ConfigError(f"{num_devices} devices cannot form {num_slices} equal slices; "
                          "use a slice count that divides the device count")
    return num_devices // num_slices


def hybrid_shape(mesh_cfg: ml_collections.ConfigDict, dcn_mesh_cfg: ml_collections.ConfigDict | None,
                 num_devices: int, num_slices: int = 1) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Axis sizes within one slice (config.mesh, over ICI) and across slices (config.dcn_mesh, over the
    data-center network); the full mesh's axis is their product. `dcn_mesh_cfg` None: data across slices."""
    if dcn_mesh_cfg is None:
        dcn_mesh_cfg = {"data": -1, "fsdp": 1, "tensor": 1}
    dcn = mesh_shape(dcn_mesh_cfg, num_slices, "config.dcn_mesh", "slices")
    if dcn[MESH_AXES.index("tensor")] > 1:
        # fsdp may cross (each layer's weight gathers and gradient reduce-scatter then go over DCN, which
        # t2ijax.plan --slices shows); tensor parallelism waits on a collective inside every matmul.
        raise ConfigError(f"config.dcn_mesh.tensor={dcn[MESH_AXES.index('tensor')]} would split every matmul "
                          "across slices, putting its collectives on the slow data-center network; keep tensor "
                          "within a slice (config.mesh.tensor) and use data or fsdp across slices")
    unit = "devices" if num_slices == 1 else "devices per slice"
    ici = mesh_shape(mesh_cfg, devices_per_slice(num_devices, num_slices), unit=unit)
    return ici, dcn


def device_slices(devices, num_slices: int | None = None) -> list[list]:
    """`devices` grouped by slice, in slice order: by slice_index where devices carry it (TPU), otherwise
    `num_slices` (default 1) equal contiguous groups, as t2ijax.plan lays out its fake CPU devices."""
    if hasattr(devices[0], "slice_index"):
        groups = collections.defaultdict(list)
        for device in devices:
            groups[device.slice_index].append(device)
        slices = [groups[index] for index in sorted(groups)]
        if num_slices not in (None, len(slices)):
            raise ConfigError(f"the devices form {len(slices)} slices (their slice_index), not {num_slices}")
        if len({len(s) for s in slices}) > 1:
            raise ConfigError(f"the slices hold {sorted(len(s) for s in slices)} devices; use equal slices")
        return slices
    num_slices = num_slices or 1
    per_slice = devices_per_slice(len(devices), num_slices)
    return [list(devices[i * per_slice:(i + 1) * per_slice]) for i in range(num_slices)]


def hybrid_devices(ici: tuple[int, ...], dcn: tuple[int, ...], slices: list[list]) -> np.ndarray:
    """The mesh's device array: each slice laid out by jax.make_mesh (ICI topology), slices tiled over
    the dcn shape, each axis slice-major (jax.experimental.mesh_utils.create_hybrid_device_mesh's order)."""
    per_slice = [jax.make_mesh(ici, MESH_AXES, devices=s).devices for s in slices]
    tiles = np.vectorize(per_slice.__getitem__, otypes=[object])(np.arange(len(slices)).reshape(dcn))
    return np.block(tiles.tolist())


def make_mesh(mesh_cfg: ml_collections.ConfigDict, devices=None,
              dcn_mesh_cfg: ml_collections.ConfigDict | None = None, num_slices: int | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh over `devices` (default: all devices of all processes). `mesh_cfg` lays
    out one slice, `dcn_mesh_cfg` (default: data across slices) the slices; one slice is the usual mesh.
    `num_slices` splits devices without slice_index (device_slices)."""
    devices = jax.devices() if devices is None else devices
    slices = device_slices(devices, num_slices)
    ici, dcn = hybrid_shape(mesh_cfg, dcn_mesh_cfg, len(devices), len(slices))
    return Mesh(hybrid_devices(ici, dcn, slices), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def run_mesh(config: ml_collections.ConfigDict, num_slices: int | None = None) -> Mesh:
    """The mesh a run's config describes over all devices: config.mesh within a slice, config.dcn_mesh across."""
    return make_mesh(config.mesh, dcn_mesh_cfg=config.dcn_mesh, num_slices=num_slices)


def slice_of_devices(mesh: Mesh, slices: list[list]) -> np.ndarray:
    """The slice of each of the mesh's devices in mesh.devices.flat order: by the logical device ids that a
    compiled program's replica groups hold."""
    index = {device: i for i, devices in enumerate(slices) for device in devices}
    return np.array([index[device] for device in mesh.devices.flat])


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


def check_distributed(d: ml_collections.ConfigDict) -> None:
    """config.distributed's own values, which initialize_distributed reads before validate can run."""
    if not d.liveness_timeout_s > 0:  # NaN too
        raise ConfigError(f"config.distributed.liveness_timeout_s={d.liveness_timeout_s} must be positive")


def initialize_distributed(cfg: ml_collections.ConfigDict) -> None:
    """Joins the job's other processes (config.distributed) and starts this process's heartbeat, which
    barriers read; call before anything touches a device.

    Without a coordinator address jax looks for a Cloud TPU VM, SLURM or Open MPI job and takes the
    address, process count and id from it; on a machine that is none of these the run is one process.
    """
    global _HEARTBEATS
    check_distributed(cfg)
    address, count, index = cfg.coordinator_address, cfg.num_processes, cfg.process_id
    heartbeat = dict(heartbeat_timeout_seconds=liveness.jax_heartbeat_timeout_s(cfg.liveness_timeout_s))
    if not address:
        if count or index != -1:
            raise ConfigError("config.distributed.num_processes/process_id are set without "
                              "config.distributed.coordinator_address; give the address (host:port) too, or "
                              "leave all three empty to detect the cluster")
        try:
            jax.distributed.initialize(**heartbeat)
        except ValueError:  # no cluster detected: one process
            return
    else:
        if ":" not in address or count < 0 or index < -1 or (count and index >= count):
            raise ConfigError(f"config.distributed needs coordinator_address as host:port (got {address!r}), "
                              f"num_processes >= 1 and 0 <= process_id < num_processes (got {count}, {index}); "
                              "0 and -1 take them from the cluster")
        jax.distributed.initialize(address, count or None, None if index == -1 else index, **heartbeat)
    if jax.process_count() > 1:
        _HEARTBEATS = liveness.Heartbeats(cfg.liveness_timeout_s)
    logging.info("process %d of %d, %d local devices of %d", jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.device_count())


_BARRIERS = itertools.count()  # every process meets the same barriers in the same order
_HEARTBEATS: liveness.Heartbeats | None = None  # started by initialize_distributed on several processes


def barrier(name: str, timeout_s: float | None = None) -> None:
    """Waits until every process gets here, through the coordination service (no device collective), for
    as long as every process is alive (t2ijax.liveness), and at most `timeout_s` if given; raises
    DistributedError naming the processes that died. A barrier id is used once, so `name` may repeat."""
    if jax.process_count() == 1:
        return
    if _HEARTBEATS is None:
        raise RuntimeError("sharding.barrier on several processes needs sharding.initialize_distributed first")
    _HEARTBEATS.wait_at_barrier(f"{name} #{next(_BARRIERS)}", timeout_s)


def global_batch(local: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assembles each host's slice of the batch into global arrays sharded over the mesh."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
