"""benchmarks/collectives.py: the collectives read from optimized HLO text (every spelling of replica
groups, async pairs, combined operands, loop trip counts), their time at a chip's bandwidth, their
comparison with the ideal (and what it flags), and on 8 fake devices the compiled train step: no
tensor-sharded kernel gathered under tensor parallelism, and Dense's flattened CPU path partitioned
as well as the kernel kept whole."""
import json
import math
import os
import subprocess
import sys
import types

import pytest

from conftest import env_with_devices
from t2ijax.benchmarks import collectives

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HLO = """HloModule jit_train_step, is_scheduled=true

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %sum = f32[] add(%x, %y)
}

%body (p: (s32[], f32[8,4])) -> (s32[], f32[8,4]) {
  %p = (s32[], f32[8,4]{1,0}) parameter(0)
  %w = f32[2,4]{1,0} get-tuple-element(%p), index=1
  %ag = f32[8,4]{1,0} all-gather(%w), channel_id=1, replica_groups=mesh['axis_0'=4,'axis_1'=2] {'axis_0'}, dimensions={0}, use_global_device_ids=true, metadata={op_name="jit(train_step)/jvp(PRX)/PRX._blocks/PRX._run_blocks/while/body/closed_call/PRXBlock_0/mlp/dot_general"}
  ROOT %t = (s32[], f32[8,4]{1,0}) tuple(%i, %ag)
}

%cond (p: (s32[], f32[8,4])) -> pred[] {
  %p = (s32[], f32[8,4]{1,0}) parameter(0)
  ROOT %c = pred[] constant(true)
}

ENTRY %main (a: f32[16,4], b: bf16[6]) -> f32[4,4] {
  %a = f32[16,4]{1,0} parameter(0)
  %b = bf16[6]{0} parameter(1)
  %loop = (s32[], f32[8,4]{1,0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"12"}}
  %ar = (f32[16,4]{1,0}, bf16[6]{0}) all-reduce(%a, %b), channel_id=2, replica_groups=[2,4]<=[4,2]T(1,0), use_global_device_ids=true, to_apply=%add, metadata={op_name="jit(train_step)/(a:b)"}
  %g0 = f32[16,4]{1,0} get-tuple-element(%ar), index=0, metadata={op_name="jit(train_step)/transpose(jvp(PRX))/img_in/dot_general"}
  %rs = f32[4,4]{1,0} reduce-scatter(%a), channel_id=3, replica_groups={{0,1,2,3},{4,5,6,7}}, dimensions={0}, to_apply=%add
  %ags = (f32[4]{0}, f32[32]{0}) all-gather-start(%x), channel_id=4, replica_groups=mesh['axis_0'=2,'axis_1'=4], device_ids=([4,2]T(1,0)) {'axis_0'}, dimensions={0}
  %agd = f32[32]{0} all-gather-done(%ags)
  %cp = f32[3]{0} collective-permute(%y), channel_id=5, source_target_pairs={{0,1},{1,0}}
  ROOT %r = f32[4,4]{1,0} copy(%rs)
}
"""


def test_parse_reads_every_kind_its_bytes_groups_and_trip_count():
    found = {(c.kind, c.shape): c for c in collectives.parse(HLO)}
    gather = found[("all-gather", (8, 4))]
    assert gather.count == 12 and gather.bytes == 128 and not gather.backward
    assert gather.replica_groups == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert gather.moves == "forward PRXBlock_0/mlp/dot_general"
    # A combined all-reduce is one collective per operand, each named by its get-tuple-element where it has one.
    grad, small = found[("all-reduce", (16, 4))], found[("all-reduce", (6,))]
    assert grad.bytes == 256 and grad.backward and grad.op_name.endswith("img_in/dot_general")
    assert small.bytes == 12 and small.dtype == "bf16" and small.op_name == "jit(train_step)/(a:b)"
    assert grad.replica_groups == [[0, 2, 4, 6], [1, 3, 5, 7]]
    scatter = found[("reduce-scatter", (16, 4))]  # the buffer: the input, not the shard it leaves
    assert scatter.bytes == 256 and scatter.group_size == 4
    done = found[("all-gather", (32,))]  # async: the -done's shape, the -start's groups
    assert done.replica_groups == [[0, 1], [2, 3], [4, 5], [6, 7]] and done.count == 1
    assert found[("collective-permute", (3,))].replica_groups == [[0, 1], [1, 0]]
    table = collectives.summary(found.values())
    assert table["all-gather"] == {"count": 13, "bytes": 12 * 128 + 128}
    assert table["all-reduce"] == {"count": 2, "bytes": 268} and table["all-to-all"] == {"count": 0, "bytes": 0}


@pytest.mark.parametrize("text, groups", [
    ("{{0,2},{1,3}}", [[0, 2], [1, 3]]),
    ("[4,2]<=[8]", [[0, 1], [2, 3], [4, 5], [6, 7]]),
    ("[2,4]<=[4,2]T(1,0)", [[0, 2, 4, 6], [1, 3, 5, 7]]),
    ("mesh['x'=4,'y'=2] {'y'}", [[0, 1], [2, 3], [4, 5], [6, 7]]),
    ("mesh['x'=4,'y'=2] {'y','x'}", [[0, 2, 4, 6, 1, 3, 5, 7]]),  # y major, as listed
    ("mesh['x'=2,'y'=4], device_ids=([4,2]T(1,0)) {'x'}", [[0, 1], [2, 3], [4, 5], [6, 7]]),
    ("mesh['a'=8] {'a':(2)2}", [[0, 2], [1, 3], [4, 6], [5, 7]]),      # the middle factor of 2 x 2 x 2
    ("mesh['a'=8] {'a':(1)2,'a':(4)2}", [[0, 1, 4, 5], [2, 3, 6, 7]]),  # the outer and inner factors
])
def test_replica_groups_in_each_spelling(text, groups):
    assert collectives.replica_groups(text) == groups


def test_estimate_seconds_is_the_ring_traffic_over_the_bandwidth():
    c = collectives.Collective("all-gather", 8 * 2**20, [list(range(8))], "", "f32", (2**21,), count=3)
    seconds = 3 * 8 * 2**20 * 7 / 8 / collectives.CHIPS["v5e"].bandwidth
    assert collectives.estimate_seconds([c], "v5e") == pytest.approx(seconds)
    reduce = collectives.Collective("all-reduce", 8 * 2**20, [list(range(8))], "", "f32", (2**21,), count=3)
    assert collectives.estimate_seconds([reduce], "v5e") == pytest.approx(2 * seconds)
    assert collectives.estimate_seconds([c], "H100") < collectives.estimate_seconds([c], "v5p") \
        < collectives.estimate_seconds([c], "v5e")


# Compiles the tiny step's train step on 8 fake devices with Dense's choice (rule), every kernel flattened (the
# CPU path before tensor parallelism was checked: flat) and every kernel whole, and prints each one's collectives.
SCRIPT = """
import json, sys
import jax
from t2ijax.benchmarks import collectives, planning
from t2ijax.config import load_config
from t2ijax.models import layers
from t2ijax.plan import parse_mesh

rule = layers._flattening_keeps_sharding
out = {}
for mesh in ("fsdp:8", "fsdp:4,tensor:2"):
    for path, choice in (("rule", rule), ("flat", lambda axes: True), ("whole", lambda axes: False)):
        if mesh == "fsdp:8" and path == "flat":
            continue  # rule is flat everywhere on fsdp alone
        layers._flattening_keeps_sharding = choice
        config = load_config("configs/shapes_tiny.py")
        config.model.update(hidden_size=64, depth=2)
        config.data.global_batch_size = 16
        config.mesh.update(parse_mesh(mesh))
        lowered = []
        original = planning.lower_train_step
        planning.lower_train_step = lambda *a, **k: lowered.append(original(*a, **k)) or lowered[-1]
        try:
            planning.plan(config)
        finally:
            planning.lower_train_step = original
        found = collectives.parse(lowered[0].compile().as_text())
        out[mesh + " " + path] = [dict(kind=c.kind, shape=c.shape, groups=c.replica_groups, op_name=c.op_name,
                                       count=c.count, bytes=c.bytes) for c in found]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def compiled():
    env = env_with_devices(8, JAX_PLATFORMS="cpu")  # the tests' fast-compiling flags; the HLO is the same
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _tensor_gathers(found: list[dict]) -> list[dict]:
    """All-gathers whose groups span the tensor axis of the (data 1, fsdp 4, tensor 2) mesh: odd and even ids."""
    return [c for c in found if c["kind"] == "all-gather" and len({d % 2 for d in c["groups"][0]}) > 1]


KERNEL_ELEMENTS = {"img_qkv": 64 * 3 * 64, "txt_kv": 64 * 2 * 64, "to_out": 64 * 64}  # hidden 64


def _kernels_gathered(found: list[dict]) -> list[dict]:
    """Tensor-axis all-gathers of an attention kernel, whole or its fsdp shard (a quarter)."""
    return [c for c in _tensor_gathers(found) for name, n in KERNEL_ELEMENTS.items()
            if f"/{name}/" in c["op_name"] and math.prod(c["shape"]) in (n, n // 4)]


def _summary(found: list[dict]) -> dict:
    return collectives.summary(collectives.Collective(c["kind"], c["bytes"], c["groups"], c["op_name"], "",
                                                      tuple(c["shape"]), c["count"]) for c in found)


def test_no_tensor_sharded_kernel_is_gathered_under_tensor_parallelism(compiled):
    assert _tensor_gathers(compiled["fsdp:4,tensor:2 rule"]) == []  # nothing at all is gathered over tensor
    # The check can fail: flattening img_qkv's [embed, 3, heads, head_dim] kernel splits heads out of place.
    assert _kernels_gathered(compiled["fsdp:4,tensor:2 flat"])


def test_the_cpu_fast_path_partitions_as_well_as_the_kernel_whole(compiled):
    for mesh in ("fsdp:8", "fsdp:4,tensor:2"):
        assert _summary(compiled[f"{mesh} rule"]) == _summary(compiled[f"{mesh} whole"]), mesh
    flat, whole = _summary(compiled["fsdp:4,tensor:2 flat"]), _summary(compiled["fsdp:4,tensor:2 whole"])
    assert flat["all-gather"]["bytes"] > whole["all-gather"]["bytes"]


def test_compare_matches_the_ideal_and_flags_the_traffic_the_issue_names():
    mesh = types.SimpleNamespace(shape={"data": 1, "fsdp": 4, "tensor": 2})
    fsdp_groups, tensor_groups = [[0, 2, 4, 6], [1, 3, 5, 7]], [[0, 1], [2, 3], [4, 5], [6, 7]]
    qkv = collectives.Param("attention/img_qkv/kernel", layers=2, bytes=64 * 96 * 4, batch_ways=4, tensor_ways=2,
                            itemsize=4)
    op = "jit(train_step)/{}(PRX)/PRX._blocks/PRXBlock_0/attention/img_qkv/dot_general"
    gathers = [collectives.Collective("all-gather", qkv.bytes, fsdp_groups, op.format("jvp"), "f32", (64, 96), 2),
               collectives.Collective("all-gather", qkv.bytes, fsdp_groups, op.format("transpose(jvp"), "f32",
                                      (64, 96), 2)]
    gradient = collectives.Collective("all-reduce", qkv.bytes, fsdp_groups, op.format("transpose(jvp"), "f32",
                                      (96, 64), 2)  # XLA:CPU's reduce-scatter
    expected = collectives.ideal([qkv], mesh, tokens=0, text=0, itemsize=4, blocks=0)
    clean = collectives.compare(gathers + [gradient], [qkv], expected, mesh, 16, 0, 0, 4)
    assert clean.flags == [] and clean.explained == {} and clean.measured == clean.ideal
    assert clean.ideal["reduce-scatter"] == {"count": 2, "bytes": 2 * qkv.bytes} and clean.notes
    kernel_over_tensor = collectives.Collective("all-gather", 2 * qkv.bytes, tensor_groups, op.format("jvp"), "f32",
                                                (64, 192), 2)
    optimizer = collectives.Collective("all-reduce", 256, fsdp_groups, "jit(train_step)/sqrt", "f32", (64,))
    bad = collectives.compare(gathers + [gradient, kernel_over_tensor, optimizer], [qkv], expected, mesh, 16, 0, 0, 4)
    assert any("tensor-sharded kernel gathered over tensor" in f for f in bad.flags)
    assert any("outside the model" in f for f in bad.flags)
    assert bad.explained[collectives.UNEXPLAINED]["all-gather"] == {"count": 2, "bytes": 4 * qkv.bytes}
