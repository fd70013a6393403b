"""Multislice meshes: config.mesh lays out one slice and config.dcn_mesh the slices, in the order
jax's create_hybrid_device_mesh gives; one slice is the mesh it always was; bad slice layouts are
one-line errors before anything compiles."""
import dataclasses
import subprocess
import sys

import numpy as np
import pytest
from jax.experimental import mesh_utils

from configs import shapes_tiny
from conftest import env_with_devices
from t2ijax import sharding
from t2ijax.config import validate
from t2ijax.errors import ConfigError


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
    with pytest.raises(ConfigError, match="the devices form 1 slices, not 2"):
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


MESHES = """
import jax, ml_collections
from jax.sharding import AxisType
from t2ijax import sharding
cfg = ml_collections.ConfigDict(dict(data=2, fsdp=2, tensor=2))
one = sharding.make_mesh(cfg)
assert one == jax.make_mesh((2, 2, 2), sharding.MESH_AXES, axis_types=(AxisType.Auto,) * 3), one
two = sharding.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1)), num_slices=2)
print(dict(two.shape), [[d.id for d in row] for row in two.devices[:, :, 0]])
"""


def test_make_mesh_on_one_slice_is_unchanged_and_slices_are_outermost():
    done = subprocess.run([sys.executable, "-c", MESHES], env=env_with_devices(8), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "{'data': 2, 'fsdp': 4, 'tensor': 1} [[0, 1, 2, 3], [4, 5, 6, 7]]"
