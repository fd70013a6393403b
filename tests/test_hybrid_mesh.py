"""Multislice meshes: config.mesh lays out one slice and config.dcn_mesh the slices, in the order
jax's create_hybrid_device_mesh gives; one slice is the mesh it always was; bad slice layouts are
one-line errors before anything compiles; a compiled step's collectives whose groups span slices
are found (by the mesh's device order) and their data-center-network part measured."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from jax.experimental import mesh_utils

from configs import shapes_tiny
from conftest import env_with_devices
from t2ijax import sharding
from t2ijax.benchmarks.collectives import Collective, cross_slice, dcn_seconds
from t2ijax.config import validate
from t2ijax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class FakeTpu:
    """What the mesh builders read of a device, with the slice_index a multislice TPU job's devices carry."""
    id: int
    slice_index: int
    platform: str = "cpu"
    device_kind: str = "cpu"
    process_index: int = 0


def ids(devices: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda d: d.id)(devices)


@pytest.mark.parametrize("ici, dcn", [((1, 4, 1), (2, 1, 1)), ((2, 2, 1), (1, 2, 1)), ((1, 2, 2), (2, 1, 1)),
                                      ((1, 2, 1), (2, 2, 1))])
def test_slices_tile_each_axis_as_create_hybrid_device_mesh_does(ici, dcn):
    per_slice = int(np.prod(ici))
    # Slices listed out of order and interleaved: grouping goes by slice_index, slices in index order.
    devices = sorted((FakeTpu(i, i // per_slice) for i in range(per_slice * int(np.prod(dcn)))),
                     key=lambda d: (d.id % 2, -d.id))
    ours = sharding.hybrid_devices(ici, dcn, sharding.device_slices(devices))
    theirs = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices)
    assert ours.shape == tuple(i * d for i, d in zip(ici, dcn))
    np.testing.assert_array_equal(ids(ours), ids(theirs))


@dataclasses.dataclass(frozen=True)
class FakeCpu:
    """A CPU device: no slice_index."""
    id: int
    platform: str = "cpu"
    device_kind: str = "cpu"


def test_devices_without_slice_index_form_contiguous_slices():
    slices = sharding.device_slices([FakeCpu(i) for i in range(8)], 4)
    assert [[d.id for d in s] for s in slices] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert [len(s) for s in sharding.device_slices([FakeCpu(i) for i in range(8)])] == [8]
    assert [len(s) for s in sharding.device_slices([FakeTpu(i, 0) for i in range(8)])] == [8]
    with pytest.raises(ConfigError, match=r"the devices form 1 slices \(their slice_index\), not 2"):
        sharding.device_slices([FakeTpu(i, 0) for i in range(8)], 2)


def _config(mesh: dict, dcn: dict | None = None):
    c = shapes_tiny.get_config()
    c.mesh.update({"data": 1, "fsdp": 1, "tensor": 1, **mesh})
    if dcn is not None:
        c.dcn_mesh.update(dcn)
    return c


def test_by_default_data_parallelism_spans_the_slices_and_minus_one_fills_a_slice():
    c = _config(dict(fsdp=-1))
    assert sharding.hybrid_shape(c.mesh, c.dcn_mesh, 8, 2) == ((1, 4, 1), (2, 1, 1))
    assert sharding.hybrid_shape(c.mesh, c.dcn_mesh, 8, 1) == ((1, 8, 1), (1, 1, 1))
    c.dcn_mesh.update(data=1, fsdp=-1)  # fsdp across slices is allowed: its all-gathers cross DCN
    assert sharding.hybrid_shape(c.mesh, c.dcn_mesh, 8, 2) == ((1, 4, 1), (1, 2, 1))
    validate(c, num_devices=8, num_slices=2)


@pytest.mark.parametrize("mesh, dcn, devices, slices, processes, message", [
    (dict(fsdp=-1), dict(data=4), 8, 2, 1,
     r"config.dcn_mesh \(data=4, fsdp=1, tensor=1\) uses 4 slices but 2 are present"),
    (dict(fsdp=-1), None, 8, 3, 1, "8 devices cannot form 3 equal slices"),
    (dict(fsdp=8), None, 8, 2, 1, r"config.mesh \(data=1, fsdp=8, tensor=1\) uses 8 devices per slice but 4 are"),
    (dict(fsdp=-1), dict(data=1, tensor=2), 8, 2, 1, "config.dcn_mesh.tensor=2 would split every matmul across "
                                                       "slices.*keep tensor within a slice"),
    (dict(fsdp=-1), None, 8, 2, 3, "3 processes cannot be shared out over 2 slices"),
])
def test_bad_slice_layouts_are_one_line_errors(mesh, dcn, devices, slices, processes, message):
    with pytest.raises(ConfigError, match=message):
        validate(_config(mesh, dcn), num_devices=devices, num_processes=processes, num_slices=slices)


def _collective(kind: str, groups: list[list[int]], nbytes: int = 1024) -> Collective:
    return Collective(kind=kind, bytes=nbytes, replica_groups=groups, op_name="", dtype="f32", shape=(nbytes // 4,),
                      count=3)


TWO_SLICES = np.array([0, 0, 0, 0, 1, 1, 1, 1])  # logical device -> slice


def test_a_group_within_one_slice_stays_off_dcn():
    assert cross_slice(_collective("all-reduce", [[0, 1, 2, 3], [4, 5, 6, 7]]), TWO_SLICES) is None
    assert cross_slice(_collective("collective-permute", [[0, 1], [5, 4]]), TWO_SLICES) is None


def test_a_group_across_slices_sends_its_reduced_share_over_dcn():
    # Data parallelism across slices: one member in each; the whole buffer goes over DCN.
    across = cross_slice(_collective("all-reduce", [[0, 4], [1, 5], [2, 6], [3, 7]]), TWO_SLICES)
    assert across.bytes == 1024 and across.group_size == 2 and across.count == 3
    # A reduce-scatter over all 8: each slice's 4 reduce over ICI first, then pairs across slices on a quarter.
    across = cross_slice(_collective("reduce-scatter", [list(range(8))]), TWO_SLICES)
    assert across.bytes == 256 and across.replica_groups == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert dcn_seconds([across], "v5p") == pytest.approx(3 * 256 * 0.5 / (50e9 / 8))
    # An all-to-all cannot reduce first: it sends the other slice's half of the whole buffer.
    across = cross_slice(_collective("all-to-all", [list(range(8))]), TWO_SLICES)
    assert across.bytes == 1024 and dcn_seconds([across], "v5e") == pytest.approx(3 * 1024 * 0.5 / (25e9 / 8))
    across = cross_slice(_collective("collective-permute", [[0, 1], [3, 4]]), TWO_SLICES)
    assert across.replica_groups == [[3, 4]]


MESHES = """
import jax, jax.numpy as jnp, ml_collections
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from t2ijax import sharding
from t2ijax.benchmarks import collectives
cfg = ml_collections.ConfigDict(dict(data=2, fsdp=2, tensor=2))
one = sharding.make_mesh(cfg)
assert one == jax.make_mesh((2, 2, 2), sharding.MESH_AXES, axis_types=(AxisType.Auto,) * 3), one
two = sharding.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1)), num_slices=2)
print(dict(two.shape), [[d.id for d in row] for row in two.devices[:, :, 0]])
# fsdp across slices, data within: the mesh's device order is not the device ids' order.
dcn = ml_collections.ConfigDict(dict(data=1, fsdp=2, tensor=1))
mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=2, fsdp=2, tensor=1)), dcn_mesh_cfg=dcn, num_slices=2)
slice_of = sharding.slice_of_devices(mesh, sharding.device_slices(jax.devices(), 2))
print([d.id for d in mesh.devices.flat], slice_of.tolist())
x = jax.ShapeDtypeStruct((8, 16), jnp.float32, sharding=NamedSharding(mesh, P("data", None)))
w = jax.ShapeDtypeStruct((16, 16), jnp.float32, sharding=NamedSharding(mesh, P("fsdp", None)))
step = lambda x, w: jax.lax.with_sharding_constraint(jnp.tanh(x @ w), NamedSharding(mesh, P("data", "fsdp"))).sum(0)
found = collectives.parse(jax.jit(step, out_shardings=NamedSharding(mesh, P())).lower(x, w).compile().as_text())
print(sorted({(c.kind, collectives.cross_slice(c, slice_of) is not None) for c in found}))
"""


def test_one_slice_is_unchanged_slices_are_outermost_and_collectives_over_a_dcn_axis_cross():
    done = subprocess.run([sys.executable, "-c", MESHES], env=env_with_devices(8), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "{'data': 2, 'fsdp': 4, 'tensor': 1} [[0, 1, 2, 3], [4, 5, 6, 7]]"
    assert lines[1] == "[0, 1, 4, 5, 2, 3, 6, 7] [0, 0, 1, 1, 0, 0, 1, 1]"
    # The sum over data stays in a slice; the collectives over fsdp cross.
    assert ("all-reduce", False) in eval(lines[2]) and ("all-gather", True) in eval(lines[2]), lines[2]


def test_the_plan_shows_what_crosses_slices(tmp_path):
    """Data parallelism across 2 slices, FSDP over 4 in each: the weight gathers stay in a slice, and what
    crosses is the all-reduce of each device's gradient shard (its parameters' fp32 bytes / 4)."""
    done = subprocess.run([sys.executable, "-m", "t2ijax.plan", "--config=configs/shapes_tiny.py",
                           "--config.model.hidden_size=64", "--config.model.depth=2",
                           "--config.data.global_batch_size=16", "--devices=8", "--slices=2", "--mesh=fsdp:4",
                           f"--json={tmp_path}/plan.json"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(8 devices in 2 slices, across them {'data': 2, 'fsdp': 1, 'tensor': 1})" in done.stdout
    assert "across slices (DCN), per step, per device" in done.stdout and "time per step over DCN" in done.stdout
    p = json.loads((tmp_path / "plan.json").read_text())
    assert p["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1} and p["dcn_mesh"] == {"data": 2, "fsdp": 1, "tensor": 1}
    across = p["cross_slice"]
    assert across["all-gather"]["count"] == 0 and p["collectives"]["all-gather"]["count"] > 0
    fp32, fsdp = 4, 4
    assert across["all-reduce"]["bytes"] == pytest.approx(fp32 * p["parameters"] / fsdp, rel=0.01)
    assert {row["axes"] for row in p["cross_slice_moves"]} == {"data"}
    assert p["dcn_seconds"]["v5e"] == pytest.approx(2 * p["dcn_seconds"]["v5p"]) and p["dcn_seconds"]["v5p"] > 0
