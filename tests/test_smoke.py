"""python -m t2ijax.bench --suite=smoke: its JSON on 4 fake CPU devices (every field present and sane), the
collective replay reproducing the collective it times, per-shape compiles, the attention fallback, bad input."""
import json
import os
import subprocess
import sys

import pytest

from configs import prx_small
from conftest import env_with_devices, error_line
from t2ijax.benchmarks.collectives import KINDS
from t2ijax.benchmarks.smoke import chip, compile_per_shape, cpu_plan_bytes, smoke_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# configs/prx_small.py shrunk: 16 px pixels at patch 4 (16 image tokens), 8 caption tokens of 16 dims
TINY = {"model.hidden_size": 32, "model.depth": 2, "model.num_heads": 2, "data.resolution": 16,
        "bench.batch_size": 8, "bench.text_length": 8, "bench.text_dim": 16, "bench.matmul_size": 256}
FIELDS = {"backend", "device_kind", "chip", "devices", "mesh", "attention", "attention_fallback", "parameters",
          "batch_size", "image_tokens", "step_ms", "images_per_s", "model_flops_per_step",
          "matmul_peak_gflops_per_device", "mfu", "mfu_vs_chip_peak", "compile", "compilation_cache_dir", "memory",
          "collectives"}
FALLBACK = "config.model.attention_impl='splash' runs only on TPUs and this backend is cpu: the smoke suite runs " \
           "xla attention instead"


def smoke(*args, overrides=TINY):
    flags = [f"--config.{key}={value}" for key, value in overrides.items()]
    return subprocess.run([sys.executable, "-m", "t2ijax.bench", "--config=configs/prx_small.py", "--suite=smoke",
                           "--noreference", *flags, *args], capture_output=True, text=True, timeout=600, cwd=REPO,
                          env=env_with_devices(4))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The smoke suite on 4 devices (fsdp 4), asked for splash attention: (its JSON, stderr)."""
    out = tmp_path_factory.mktemp("smoke") / "smoke.json"
    result = smoke("--steps=3", f"--json={out}", "--config.model.attention_impl=splash")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text()), result.stderr


def test_every_field_is_present_and_sane(run):
    report, _ = run
    s = report["suites"]["smoke"]
    assert set(s) == FIELDS
    assert (s["backend"], s["device_kind"], s["chip"], s["devices"]) == ("cpu", "cpu", None, 4)
    assert s["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1} and (s["batch_size"], s["image_tokens"]) == (8, 16)
    assert 10_000 < s["parameters"] < 1_000_000
    assert s["step_ms"] > 0 and s["images_per_s"] == pytest.approx(8e3 / s["step_ms"], rel=1e-9)
    assert 0 < s["mfu"] <= 1 and s["mfu_vs_chip_peak"] is None
    assert s["mfu"] == pytest.approx(s["model_flops_per_step"] / (s["step_ms"] / 1e3) /
                                     (s["matmul_peak_gflops_per_device"] * 1e9 * 4), rel=1e-9)
    [shape] = s["compile"]  # prx_small trains at one size: data.resolution's square, in pixels (3 channels)
    assert shape["shape"] == [8, 16, 16, 3] and shape["image_tokens"] == 16
    assert shape["lower_s"] > 0 and shape["compile_s"] > 0
    assert s["compilation_cache_dir"] == os.environ["JAX_COMPILATION_CACHE_DIR"]  # conftest's: compile_s may be a read
    memory = s["memory"]
    assert memory["device_peak_bytes"] is None
    assert memory["device_peak"] == "not available: the cpu backend's memory_stats() gives no peak"
    assert memory["planned_bytes"] >= memory["temp_bytes"] > 0
    assert (memory["plan_bytes"], memory["plan"]) == (memory["planned_bytes"], "this run's compiled step")


def test_the_plan_an_accelerator_is_compared_with_is_the_cpu_compilers(run):
    """Off a CPU the suite compiles the step again on fake CPU devices, in a subprocess: here it must give
    the planned bytes of the CPU run."""
    config = prx_small.get_config()
    config.update_from_flattened_dict(TINY)
    plan, how = cpu_plan_bytes(smoke_config(config, "tpu")[0], 4)
    assert plan == run[0]["suites"]["smoke"]["memory"]["planned_bytes"]
    assert how == "the CPU compiler's plan on 4 fake devices, xla attention"
    config.mesh.tensor = 3  # 4 devices do not split 1 x -1 x 3
    plan, how = cpu_plan_bytes(smoke_config(config, "tpu")[0], 4)
    assert plan is None and how.startswith("planning on 4 CPU devices failed: ")


def test_collectives_are_measured_and_the_cpu_has_no_estimate(run):
    c = run[0]["suites"]["smoke"]["collectives"]
    assert set(c["per_kind"]) == set(KINDS)
    assert c["per_kind"]["all-gather"]["count"] > 0  # fsdp gathers the parameters
    assert all(kind["bytes"] > 0 for kind in c["per_kind"].values() if kind["count"])
    assert c["measured_s_per_step"] > 0 and c["distinct_replayed"] > 0 and c["replayed_on_size_only"] == 0
    assert set(c["measured_s_per_kind"]) == {kind for kind, n in c["per_kind"].items() if n["count"]}
    assert c["measured_s_per_step"] == pytest.approx(sum(c["measured_s_per_kind"].values()), rel=1e-9)
    step_s = run[0]["suites"]["smoke"]["step_ms"] / 1e3
    assert c["measured_fraction_of_step"] == pytest.approx(c["measured_s_per_step"] / step_s, rel=1e-9)
    assert c["estimated_s_per_step"] is None and c["estimate"] == "none: collectives.CHIPS has no bandwidth for 'cpu'"


def test_splash_on_a_cpu_falls_back_to_xla_in_one_logged_line(run):
    report, stderr = run
    assert report["suites"]["smoke"]["attention"] == "xla"
    assert report["suites"]["smoke"]["attention_fallback"] == FALLBACK
    [line] = [line for line in stderr.splitlines() if "attention_impl" in line]  # one line, logged once
    assert line.endswith(FALLBACK)


# float32: XLA's CPU backend computes a bfloat16 collective in float32 (a step's HLO on a CPU says f32 too)
REPLAY = """
import jax
from t2ijax.benchmarks.collectives import Collective, parse
from t2ijax.benchmarks.replay import program, replay_axes

mesh = jax.make_mesh((1, 2, 2), ("data", "fsdp", "tensor"))
for kind, groups in [("all-gather", [[0, 2], [1, 3]]), ("reduce-scatter", [[0, 1], [2, 3]]),
                     ("all-reduce", [[0, 1, 2, 3]]), ("all-to-all", [[0, 2], [1, 3]]),
                     ("collective-permute", [[0, 2], [2, 0], [1, 3], [3, 1]])]:
    c = Collective(kind=kind, bytes=3 << 12, replica_groups=groups, op_name="", dtype="f32", shape=(3072,))
    axes, exact = replay_axes(mesh, c)
    loop, x = program(mesh, c, axes, trips=7)
    found = parse(loop.lower(x).compile().as_text())
    assert exact and {f.kind for f in found} == {kind}, (kind, found)
    assert sum(f.bytes for f in found) == c.bytes, (kind, found)  # XLA splits a CPU all-to-all per chunk
    assert all(f.count == 7 and f.replica_groups == groups and f.dtype == "f32" for f in found), (kind, found)
"""


def test_the_replay_runs_the_collective_it_times():
    """Each kind's replay program, compiled and parsed back: the same kind, bytes, groups, once per trip."""
    subprocess.run([sys.executable, "-c", REPLAY], cwd=REPO, env=env_with_devices(4), check=True, timeout=300)


def test_every_training_size_is_compiled():
    config = prx_small.get_config()
    config.update_from_flattened_dict({**TINY, "model.dtype": "float32", "total_steps": 2})
    config.resolution.phases = ((8, 8, 1, 1e-4), (16, 8, 1, 1e-4))
    shapes, square = compile_per_shape(smoke_config(config, "cpu")[0])
    assert [(s["shape"], s["image_tokens"]) for s in shapes] == [([8, 8, 8, 3], 4), ([8, 16, 16, 3], 16)]
    assert all(s["compile_s"] > 0 for s in shapes) and square is not None


def test_attention_falls_back_only_off_its_backend():
    config = prx_small.get_config()  # 64 px at patch 4: 256 image tokens, bfloat16
    assert [smoke_config(config, platform)[0].model.attention_impl for platform in ("cpu", "gpu", "tpu")] == \
        ["flash", "cudnn", "splash"]  # 'auto' resolved
    config.model.attention_impl = "cudnn"
    resolved, fallback = smoke_config(config, "gpu")
    assert (resolved.model.attention_impl, fallback) == ("cudnn", None)
    resolved, fallback = smoke_config(config, "tpu")
    assert resolved.model.attention_impl == "xla" and config.model.attention_impl == "cudnn"
    assert fallback == "config.model.attention_impl='cudnn' runs only on NVIDIA GPUs and this backend is tpu: " \
                       "the smoke suite runs xla attention instead"


def test_device_kinds_name_their_chip():
    kinds = ["TPU v5 lite", "TPU v5", "TPU v5p", "TPU v6 lite", "NVIDIA H100 80GB HBM3", "NVIDIA H200", "cpu"]
    assert [chip(kind) for kind in kinds] == ["v5e", "v5p", "v5p", "v6e", "H100", None, None]


def test_a_batch_the_mesh_cannot_split_is_one_line_before_any_compile():
    result = smoke(overrides={**TINY, "bench.batch_size": 6})
    assert "bench.batch_size=6 does not split over the mesh's data x fsdp devices" in error_line(result)
